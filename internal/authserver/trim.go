package authserver

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apikeysv1alpha1 "github.com/apikey-operator/apikey-operator/api/v1alpha1"
)

// CacheOptions is what an auth-server-only manager caches of ApiKeys and
// records: the fields the index reads. The index keeps its own copy of them
// from its own watches, and nothing else in an auth-only replica reads them
// through the manager, so no informer of the manager holds them; should
// one ever be started, it holds no more than this. Beside the controller,
// use controller.CacheOptions, which keeps what the controller reads.
func CacheOptions() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&apikeysv1alpha1.ApiKey{}:       {Transform: trimApiKey},
		&apikeysv1alpha1.ApiKeyRecord{}: {Transform: trimRecord},
	}
}

var _ toolscache.TransformFunc = trimApiKey

// trimApiKey keeps identity, deletion and suspension. Nothing in the auth
// server reads an ApiKey's status.
func trimApiKey(obj any) (any, error) {
	key, ok := obj.(*apikeysv1alpha1.ApiKey)
	if !ok {
		return obj, nil
	}
	return &apikeysv1alpha1.ApiKey{
		TypeMeta:   key.TypeMeta,
		ObjectMeta: indexedMeta(&key.ObjectMeta),
		Spec:       apikeysv1alpha1.ApiKeySpec{Suspended: key.Spec.Suspended},
	}, nil
}

// indexedMeta is what the index reads of a key's metadata: who it is, the
// resourceVersion its feed tracks, and whether it is being deleted.
func indexedMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID,
		ResourceVersion: m.ResourceVersion, DeletionTimestamp: m.DeletionTimestamp}
}

// trimRecord keeps the name and the spec; the generation, which tells a
// spec change from a status one; the deletion timestamp, which revokes the
// token; and the status's lastUsedAt, which the usage flusher moves
// forward.
func trimRecord(obj any) (any, error) {
	rec, ok := obj.(*apikeysv1alpha1.ApiKeyRecord)
	if !ok {
		return obj, nil
	}
	return &apikeysv1alpha1.ApiKeyRecord{
		TypeMeta: rec.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: rec.Name, UID: rec.UID, ResourceVersion: rec.ResourceVersion, Generation: rec.Generation,
			DeletionTimestamp: rec.DeletionTimestamp,
		},
		Spec:   rec.Spec,
		Status: apikeysv1alpha1.ApiKeyRecordStatus{LastUsedAt: rec.Status.LastUsedAt},
	}, nil
}
