package policy

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// attestationKeyData is the Secret key holding the attestation key.
const attestationKeyData = "key"

// LoadAttestationKey reads the key that signs owners from the Secret
// namespace/name, creating it with 32 random bytes the first time. Every
// replica of the manager shares it through that Secret; whichever creates
// it first wins and the others read it.
func LoadAttestationKey(ctx context.Context, c client.Client, namespace, name string) ([]byte, error) {
	secret := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "apikey-operator"}},
			Immutable: ptr.To(true),
			Data:      map[string][]byte{attestationKeyData: key},
		}
		err = c.Create(ctx, secret)
		if apierrors.IsAlreadyExists(err) {
			err = c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading the attestation key from Secret %s/%s: %w", namespace, name, err)
	}
	key := secret.Data[attestationKeyData]
	if len(key) < 16 {
		return nil, fmt.Errorf("the attestation key in Secret %s/%s is shorter than 16 bytes", namespace, name)
	}
	return key, nil
}
