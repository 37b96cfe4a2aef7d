package apikeyauth

import (
	"context"
	"testing"
)

func TestFromContextWithoutIdentity(t *testing.T) {
	if id, ok := FromContext(context.Background()); ok || id != nil {
		t.Errorf("FromContext(empty) = %v, %t", id, ok)
	}
	if id, ok := FromContext(NewContext(context.Background(), nil)); ok || id != nil {
		t.Errorf("FromContext(nil identity) = %v, %t", id, ok)
	}
}
