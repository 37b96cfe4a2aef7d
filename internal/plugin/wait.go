package plugin

import (
	"context"
	"errors"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// errKeyDeleted ends a wait for a key that someone deleted meanwhile.
var errKeyDeleted = errors.New("the ApiKey was deleted while waiting for it")

// errWaitTimedOut ends a wait that ran out of --timeout.
var errWaitTimedOut = errors.New("timed out")

// keyWatch lists and watches the one ApiKey called name, the way kubectl
// wait does: a field selector on metadata.name.
func (s *session) keyWatch(name string) cache.ListerWatcher {
	byName := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			list := &apikeysv1alpha1.ApiKeyList{}
			err := s.client.List(ctx, list, client.InNamespace(s.namespace), &client.ListOptions{Raw: &o})
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return s.client.Watch(ctx, &apikeysv1alpha1.ApiKeyList{}, client.InNamespace(s.namespace), &client.ListOptions{Raw: &o})
		},
	}
}

// waitForKey watches the key until done says so or returns an error, for at
// most timeout. It returns the last version of the key it saw (nil if none),
// and errWaitTimedOut or errKeyDeleted when the wait ended without done.
func (s *session) waitForKey(ctx context.Context, name string, timeout time.Duration,
	done func(*apikeysv1alpha1.ApiKey) (bool, error)) (*apikeysv1alpha1.ApiKey, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var last *apikeysv1alpha1.ApiKey
	_, err := watchtools.UntilWithSync(ctx, s.keyWatch(name), &apikeysv1alpha1.ApiKey{}, nil,
		func(ev watch.Event) (bool, error) {
			key, ok := ev.Object.(*apikeysv1alpha1.ApiKey)
			if !ok {
				return false, nil
			}
			last = key
			if ev.Type == watch.Deleted {
				return false, errKeyDeleted
			}
			return done(key)
		})
	return last, waitOutcome(ctx, err)
}

// waitForGone waits until the key no longer exists, for at most timeout.
func (s *session) waitForGone(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	storeKey := s.namespace + "/" + name
	absent := func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(storeKey)
		return !exists, err
	}
	_, err := watchtools.UntilWithSync(ctx, s.keyWatch(name), &apikeysv1alpha1.ApiKey{}, absent,
		func(ev watch.Event) (bool, error) { return ev.Type == watch.Deleted, nil })
	return waitOutcome(ctx, err)
}

// waitOutcome names why a wait ended early: its timeout, an interrupt, or the
// condition's own error.
func waitOutcome(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errWaitTimedOut
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return err
	}
}
