{{- define "cloudoptim.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "cloudoptim.labels" -}}
app.kubernetes.io/name: cloudoptim
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}
{{- define "cloudoptim.selector" -}}
app.kubernetes.io/name: cloudoptim
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}
{{- define "cloudoptim.serviceAccount" -}}{{ default .Release.Name .Values.serviceAccount.name }}{{- end -}}
{{- define "cloudoptim.image" -}}{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}{{- end -}}
