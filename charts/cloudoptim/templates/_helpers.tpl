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
{{/*
CEL: every field in .fields is the same in .new and .old (both absent, or both present and equal).
Used by the workload guard when right-sizing Apply may change containers' resources: every other
field of the pod template is compared by name. The lists hold the fields of Kubernetes 1.30 (the
first release with ValidatingAdmissionPolicy GA); a field added later is not compared.
*/}}
{{- define "cloudoptim.sameFields" -}}
{{- $new := .new -}}{{- $old := .old -}}
{{- $terms := list -}}
{{- range .fields -}}
{{- $terms = append $terms (printf "(has(%s.%s) ? (has(%s.%s) && %s.%s == %s.%s) : !has(%s.%s))" $new . $old . $new . $old . $old .) -}}
{{- end -}}
{{- join " && " $terms -}}
{{- end -}}
{{- define "cloudoptim.podSpecFields" -}}
{{- list "volumes" "initContainers" "ephemeralContainers" "restartPolicy" "terminationGracePeriodSeconds" "activeDeadlineSeconds" "dnsPolicy" "nodeSelector" "serviceAccountName" "serviceAccount" "automountServiceAccountToken" "nodeName" "hostNetwork" "hostPID" "hostIPC" "shareProcessNamespace" "securityContext" "imagePullSecrets" "hostname" "subdomain" "affinity" "schedulerName" "tolerations" "hostAliases" "priorityClassName" "priority" "dnsConfig" "readinessGates" "runtimeClassName" "enableServiceLinks" "preemptionPolicy" "overhead" "topologySpreadConstraints" "setHostnameAsFQDN" "os" "hostUsers" "schedulingGates" "resourceClaims" | toJson -}}
{{- end -}}
{{- define "cloudoptim.containerFields" -}}
{{- list "image" "command" "args" "workingDir" "ports" "envFrom" "env" "volumeMounts" "volumeDevices" "livenessProbe" "readinessProbe" "startupProbe" "lifecycle" "terminationMessagePath" "terminationMessagePolicy" "imagePullPolicy" "securityContext" "stdin" "stdinOnce" "tty" "resizePolicy" "restartPolicy" | toJson -}}
{{- end -}}
{{/*
CEL validations of a pod template at .new / .old when only containers' resources may change:
template metadata, every pod spec field but containers, and each container's fields but resources.
*/}}
{{- define "cloudoptim.resourcesOnly" -}}
{{- $podFields := include "cloudoptim.podSpecFields" . | fromJsonArray -}}
{{- $containerFields := include "cloudoptim.containerFields" . | fromJsonArray -}}
- expression: {{ printf "has(%s.metadata) == has(%s.metadata) && (!has(%s.metadata) || %s.metadata == %s.metadata)" .new .old .new .new .old | quote }}
  message: "CloudOptim may change only containers' resources in a pod template (rightsizing.apply.enabled), never its metadata"
- expression: {{ include "cloudoptim.sameFields" (dict "new" (printf "%s.spec" .new) "old" (printf "%s.spec" .old) "fields" $podFields) | quote }}
  message: "CloudOptim may change only containers' resources in a pod template (rightsizing.apply.enabled), never another pod field"
- expression: {{ printf "size(%s.spec.containers) == size(%s.spec.containers) && %s.spec.containers.all(c, %s.spec.containers.exists(o, o.name == c.name && %s))" .new .old .new .old (include "cloudoptim.sameFields" (dict "new" "c" "old" "o" "fields" $containerFields)) | quote }}
  message: "CloudOptim may change only containers' resources in a pod template (rightsizing.apply.enabled), never a container's image, command, env or any other field"
{{- end -}}
