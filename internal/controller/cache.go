package controller

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions trims the Secrets the controller caches to what it reads:
// their metadata only (it never watches data) and, of that, only its own
// annotations and labels. Foreign annotations can hold a Secret's data:
// kubectl.kubernetes.io/last-applied-configuration does.
func CacheOptions() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{secretMeta(): {Transform: trimSecretMeta}}
}

// trimSecretMeta keeps what the controller reads of a Secret: identity,
// ownership, timestamps, and the apikeys.dev annotations and labels.
func trimSecretMeta(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	trimmed := &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
			OwnerReferences: m.OwnerReferences,
			Annotations:     ours(m.Annotations),
			Labels:          ours(m.Labels),
		},
	}
	if v, ok := m.Labels[ManagedByLabel]; ok {
		if trimmed.Labels == nil {
			trimmed.Labels = map[string]string{}
		}
		trimmed.Labels[ManagedByLabel] = v
	}
	if trimmed.GetObjectKind().GroupVersionKind().Empty() {
		trimmed.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	}
	return trimmed, nil
}

// ours keeps the apikeys.dev/ entries of a metadata map.
func ours(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, "apikeys.dev/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
