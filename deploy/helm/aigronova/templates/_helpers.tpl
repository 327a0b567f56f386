{{/* Names, labels and the list of components every template iterates over. */}}

{{- define "aigronova.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aigronova.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "<name>"). */}}
{{- define "aigronova.labels" -}}
helm.sh/chart: {{ include "aigronova.chart" .root }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: aigronova
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
aigronova.com.br/plan-size: {{ .root.Values.planSize }}
{{ include "aigronova.selectorLabels" . }}
{{- end -}}

{{- define "aigronova.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aigronova.secretName" -}}
{{- default (printf "%s-secrets" (include "aigronova.fullname" .)) .Values.secrets.name -}}
{{- end -}}

{{- define "aigronova.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the Prometheus Operator's objects are to be rendered. */}}
{{- define "aigronova.prometheusOperator" -}}
{{- $mode := toString .Values.monitoring.prometheusOperator -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/* A service's config section: quantum-studio -> QUANTUM_STUDIO. Only for sections: a map key
under a section (an upstream's owner, a data-subject service) keeps its dashes. */}}
{{- define "aigronova.section" -}}
{{- . | upper | replace "-" "_" -}}
{{- end -}}

{{/* The service that keeps the audit log, as `aigronova serve` names it. */}}
{{- define "aigronova.governanceName" -}}
ai-governance
{{- end -}}

{{/*
The components, gateway first, as {"components": [...]}: each with its name, kind (gateway or
service), port, config section, owner, governance (true for ai-governance only) and settings
(serviceDefaults overridden by its own values).
*/}}
{{- define "aigronova.components" -}}
{{- $root := . -}}
{{- $components := list -}}
{{- $gateway := mergeOverwrite (deepCopy .Values.serviceDefaults) (deepCopy .Values.gateway) -}}
{{- $components = append $components (dict "name" "gateway" "kind" "gateway" "port" .Values.gateway.httpPort "portName" "http" "section" "GATEWAY" "owner" "gateway" "governance" false "settings" $gateway) -}}
{{- range $name, $service := .Values.services -}}
{{- if or (not (hasKey $service "enabled")) $service.enabled -}}
{{- if not (regexMatch "^[a-z][a-z0-9-]*[a-z0-9]$" $name) -}}
{{- fail (printf "services.%s: a service name is lower case letters, digits and dashes" $name) -}}
{{- end -}}
{{- $settings := mergeOverwrite (deepCopy $root.Values.serviceDefaults) (deepCopy $service) -}}
{{- $section := default (include "aigronova.section" $name) $service.section -}}
{{- $governance := eq $name (include "aigronova.governanceName" $root) -}}
{{- $components = append $components (dict "name" $name "kind" "service" "port" $service.grpcPort "portName" "grpc" "section" $section "owner" (default $name $service.owner) "governance" $governance "settings" $settings) -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "components" $components) -}}
{{- end -}}

{{/* The checkov skips every workload carries, each with its reason. */}}
{{- define "aigronova.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_35=The binary reads its configuration only from environment variables; secrets come from a Secret by secretKeyRef and are never logged.
checkov.io/skip2: CKV_K8S_43=CI deploys by immutable ECR tag (the commit) and ECR tags are immutable; set image.digest to pin a digest.
checkov.io/skip3: CKV_K8S_15=IfNotPresent is right for immutable tags; Always would only add registry round trips.
{{- end -}}
