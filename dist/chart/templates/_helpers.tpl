{{/* The chart name, or nameOverride. */}}
{{- define "apikey-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, the release name when it
already contains the chart name, or "<release>-<chart>". Kept short enough that
the longest suffix ("-validating-webhook-configuration") still fits in 63.
*/}}
{{- define "apikey-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- $name := include "apikey-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "apikey-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "apikey-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select this release's pods; add app.kubernetes.io/component for one Deployment. */}}
{{- define "apikey-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apikey-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "apikey-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Names the manager is told about, so that they follow the release name. */}}
{{- define "apikey-operator.managerName" -}}{{ include "apikey-operator.fullname" . }}-controller-manager{{- end }}
{{- define "apikey-operator.authServerName" -}}{{ include "apikey-operator.fullname" . }}-auth-server{{- end }}
{{- define "apikey-operator.webhookServiceName" -}}{{ include "apikey-operator.fullname" . }}-webhook-service{{- end }}
{{- define "apikey-operator.mutatingWebhookName" -}}{{ include "apikey-operator.fullname" . }}-mutating-webhook-configuration{{- end }}
{{- define "apikey-operator.validatingWebhookName" -}}{{ include "apikey-operator.fullname" . }}-validating-webhook-configuration{{- end }}
{{- define "apikey-operator.certificateName" -}}{{ include "apikey-operator.fullname" . }}-serving-cert{{- end }}
{{- define "apikey-operator.metricsServiceName" -}}{{ include "apikey-operator.fullname" . }}-metrics-service{{- end }}
{{- define "apikey-operator.metricsCertificateName" -}}{{ include "apikey-operator.fullname" . }}-metrics-cert{{- end }}
{{- define "apikey-operator.metricsCertSecretName" -}}{{ include "apikey-operator.fullname" . }}-metrics-server-cert{{- end }}

{{/*
"true" when the chart's CA Issuer issues the metrics certificate: cert-manager
mode with metrics on. Self-signed, the manager has no certificate for its
metrics server that anyone could verify, and serves one of its own.
*/}}
{{- define "apikey-operator.metricsCert" -}}
{{- if and .Values.metrics.enabled (eq (include "apikey-operator.tlsMode" .) "cert-manager") }}true{{ end }}
{{- end }}

{{/*
The Secret holding the webhook serving certificate: cert-manager's, named like
its Certificate, or the one the manager keeps itself in self-signed mode (its
--webhook-cert-secret default for a release named apikey-operator). The two
differ so that switching modes never gives one Secret two owners.
*/}}
{{- define "apikey-operator.certSecretName" -}}
{{- if eq (include "apikey-operator.tlsMode" .) "self-signed" }}
{{- include "apikey-operator.fullname" . }}-webhook-server-cert
{{- else }}
{{- include "apikey-operator.certificateName" . }}
{{- end }}
{{- end }}

{{/*
Self-signed: the Secret holding the manager's CA and its private key
(--webhook-ca-secret). Only the manager may read it, never the auth-only pods.
*/}}
{{- define "apikey-operator.caSecretName" -}}{{ include "apikey-operator.fullname" . }}-webhook-ca{{- end }}

{{/* tls.mode, checked. */}}
{{- define "apikey-operator.tlsMode" -}}
{{- $mode := .Values.tls.mode }}
{{- if not (has $mode (list "cert-manager" "self-signed")) }}
{{- fail (printf "tls.mode must be cert-manager or self-signed, not %q" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
Flags both Deployments share. Self-signed, every replica installs the
certificate from the Secret into --webhook-cert-path; only the one running the
controller, while it leads, issues, rotates and injects it, keeping the CA in
--webhook-ca-secret, which the auth-only pods ignore and may not read.
*/}}
{{- define "apikey-operator.commonArgs" -}}
{{- if eq (include "apikey-operator.tlsMode" .) "self-signed" }}
- --cert-mode=self-signed
- --webhook-cert-secret={{ include "apikey-operator.certSecretName" . }}
- --webhook-ca-secret={{ include "apikey-operator.caSecretName" . }}
- --webhook-service={{ include "apikey-operator.webhookServiceName" . }}
- --mutating-webhook-configuration={{ include "apikey-operator.mutatingWebhookName" . }}
- --validating-webhook-configuration={{ include "apikey-operator.validatingWebhookName" . }}
- --webhook-cert-extra-services={{ include "apikey-operator.authServerName" . }}
{{- end }}
- --health-probe-bind-address=:8081
- --metrics-bind-address={{ if .Values.metrics.enabled }}:8443{{ else }}0{{ end }}
{{- if include "apikey-operator.metricsCert" . }}
- --metrics-cert-path=/tmp/k8s-metrics-server/metrics-certs
{{- end }}
- --webhook-port={{ .Values.webhook.port }}
- --webhook-cert-path=/tmp/k8s-webhook-server/serving-certs
- {{ printf "--api-key-header=%s" .Values.apiKeyHeader | quote }}
- {{ printf "--usage-flush-interval=%s" .Values.usageFlushInterval | quote }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The container parts both Deployments share, after name, image and args. */}}
{{- define "apikey-operator.containerCommon" -}}
env:
# The operator's own namespace: where, self-signed, it keeps its webhook CA
# and certificate.
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
ports:
# Admission webhooks and the auth server (/tokenreview, /auth, /verify) share
# the webhook server's HTTPS port.
- containerPort: {{ .Values.webhook.port }}
  name: webhook-server
  protocol: TCP
{{- if .Values.metrics.enabled }}
- containerPort: 8443
  name: metrics
  protocol: TCP
{{- end }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: 8081
  initialDelaySeconds: 15
  periodSeconds: 20
# Ready once the caches, and so the token index, have synced.
readinessProbe:
  httpGet:
    path: /readyz
    port: 8081
  initialDelaySeconds: 5
  periodSeconds: 10
volumeMounts:
- mountPath: /tmp/k8s-webhook-server/serving-certs
  name: webhook-certs
  {{- if eq (include "apikey-operator.tlsMode" .) "cert-manager" }}
  readOnly: true
  {{- end }}
{{- if include "apikey-operator.metricsCert" . }}
- mountPath: /tmp/k8s-metrics-server/metrics-certs
  name: metrics-certs
  readOnly: true
{{- end }}
{{- end }}

{{/*
Where the serving certificate comes from: cert-manager's Secret, mounted; or,
self-signed, a writable directory the manager fills from its Secret.
*/}}
{{- define "apikey-operator.certVolume" -}}
- name: webhook-certs
  {{- if eq (include "apikey-operator.tlsMode" .) "cert-manager" }}
  secret:
    secretName: {{ include "apikey-operator.certSecretName" . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if include "apikey-operator.metricsCert" . }}
- name: metrics-certs
  secret:
    secretName: {{ include "apikey-operator.metricsCertSecretName" . }}
{{- end }}
{{- end }}

{{/*
Pod metadata of one Deployment: the chart's labels over .pod.podLabels, and
.pod.podAnnotations. Takes (dict "root" $ "pod" <values> "component" <name> "container" <name>).
*/}}
{{- define "apikey-operator.podMetadata" -}}
annotations:
  {{- toYaml (merge (dict "kubectl.kubernetes.io/default-container" .container) (.pod.podAnnotations | default dict)) | nindent 2 }}
labels:
  {{- toYaml (merge (include "apikey-operator.labels" .root | fromYaml) (dict "app.kubernetes.io/component" .component) (.pod.podLabels | default dict)) | nindent 2 }}
{{- end }}

{{/*
Where one Deployment's pods may run: the scheduling values of .pod, and its
topology spread: .pod.topologySpreadConstraints (each without a labelSelector
selecting this Deployment's pods) or, when empty, over nodes then zones, as
far as the scheduler can. Takes (dict "root" $ "pod" <values> "component" <name>).
*/}}
{{- define "apikey-operator.podScheduling" -}}
{{- $selector := dict "matchLabels" (merge (include "apikey-operator.selectorLabels" .root | fromYaml) (dict "app.kubernetes.io/component" .component)) }}
{{- $constraints := list }}
{{- range .pod.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not $c.labelSelector }}
{{- $_ := set $c "labelSelector" $selector }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
{{- if not $constraints }}
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
{{- $constraints = append $constraints (dict "maxSkew" 1 "topologyKey" . "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" $selector) }}
{{- end }}
{{- end }}
topologySpreadConstraints:
{{- toYaml $constraints | nindent 0 }}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
