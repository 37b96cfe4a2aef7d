// Package v1alpha1 holds the apikeys.dev/v1alpha1 API: ApiKey, the object a
// user applies, and ApiKeyRecord, the hashed record the operator keeps.
// +kubebuilder:object:generate=true
// +groupName=apikeys.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "apikeys.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ApiKey{}, &ApiKeyList{}, &ApiKeyRecord{}, &ApiKeyRecordList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
