{{- define "cloudoptim.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "cloudoptim.chart" -}}{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}{{- end -}}
{{/* The standard labels, on every object the chart renders. */}}
{{- define "cloudoptim.labels" -}}
app.kubernetes.io/name: cloudoptim
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.mode }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cloudoptim
helm.sh/chart: {{ include "cloudoptim.chart" . }}
{{- end -}}
{{/* What the Deployment, Service, PDB and monitors select on: never changes across upgrades. */}}
{{- define "cloudoptim.selector" -}}
app.kubernetes.io/name: cloudoptim
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}
{{- define "cloudoptim.serviceAccount" -}}{{ default .Release.Name .Values.serviceAccount.name }}{{- end -}}
{{/* repository@digest when image.digest is set (it wins over the tag), else repository:tag (default appVersion). */}}
{{- define "cloudoptim.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}
