{{/* Name of the chart, shortened to what a label value allows. */}}
{{- define "wideep.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name of every namespaced object. */}}
{{- define "wideep.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of the cluster-scoped objects (ClusterRole, ClusterRoleBinding): unique per release and namespace. */}}
{{- define "wideep.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "wideep.fullname" .) | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "wideep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wideep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wideep.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wideep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wideep
{{- end -}}

{{- define "wideep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wideep.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "wideep.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: \"latest\" is refused: pin an exact version (or set image.digest)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Cross-field checks that a JSON schema cannot word clearly. */}}
{{- define "wideep.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicas: %d replicas need leaderElection.enabled=true; without leader election every replica would reconcile every ParallelDeployment at once" (int .Values.replicas)) -}}
{{- end -}}
{{- if eq (int .Values.operator.livenessPort) (int .Values.metrics.port) -}}
{{- fail (printf "operator.livenessPort and metrics.port must differ (both are %d)" (int .Values.metrics.port)) -}}
{{- end -}}
{{- end -}}

{{/* Rules of the operator's (Cluster)Role: only what it calls. */}}
{{- define "wideep.rules" -}}
# Watched (kopf list+watch) and read; never written: the operator does not write spec.
- apiGroups: ["wideep.dev"]
  resources: ["paralleldeployments"]
  verbs: ["get", "list", "watch"]
# Status: server-side apply (PATCH) of the status subresource.
- apiGroups: ["wideep.dev"]
  resources: ["paralleldeployments/status"]
  verbs: ["get", "patch", "update"]
# Rank pods and their Services: watched, created and updated by server-side apply, deleted on gang restart.
- apiGroups: [""]
  resources: ["pods", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kubernetes Events about ParallelDeployments.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

