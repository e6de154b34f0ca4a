{{/* The chart's name, cut to fit a label value. */}}
{{- define "kwf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the prefix of every object this chart creates. */}}
{{- define "kwf.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kwf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kwf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kwf.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kwf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kwf
{{- end -}}

{{- define "kwf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kwf.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces that get per-namespace objects (Roles, the step
ServiceAccount, the NetworkPolicy), as a JSON list: the watched namespaces,
or the release namespace when every namespace is watched.
*/}}
{{- define "kwf.targetNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/* Whether the operator watches every namespace. */}}
{{- define "kwf.clusterWide" -}}
{{- if and (eq .Values.rbac.scope "cluster") (not .Values.watchNamespaces) -}}true{{- end -}}
{{- end -}}

{{- define "kwf.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "kwf.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) -}}
{{- end -}}

{{/* The Lease the replicas compete for when standby is on. */}}
{{- define "kwf.leaseName" -}}
{{- include "kwf.fullname" . -}}
{{- end -}}

{{/* The operator pod's labels, to select it. */}}
{{- define "kwf.operatorSelector" -}}
{{ include "kwf.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Image prefixes the image allowlist accepts, as a JSON list: the listed ones,
and the runner's and the operator's repositories (by tag or by digest), which
kwf itself needs.
*/}}
{{- define "kwf.allowedImagePrefixes" -}}
{{- $own := list -}}
{{- range list .Values.runner.image.repository .Values.operator.image.repository -}}
{{- $own = append (append $own (printf "%s:" .)) (printf "%s@" .) -}}
{{- end -}}
{{- concat .Values.imagePolicy.allowedPrefixes $own | uniq | toJson -}}
{{- end -}}

{{/* The admission webhook's Service, and the Secret of its serving certificate. */}}
{{- define "kwf.webhookService" -}}
{{- printf "%s-webhook" (include "kwf.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kwf.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "kwf.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
