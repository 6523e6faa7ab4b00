{{/* Names and labels. */}}
{{- define "netpath.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "netpath.fullname" -}}
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

{{- define "netpath.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netpath.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "netpath.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "netpath.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: netpath-exporter
{{- end -}}

{{- define "netpath.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "netpath.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "netpath.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when a node-side feature needs the host's PID namespace, root and capabilities. */}}
{{- define "netpath.nodeAccess" -}}
{{- if or .Values.nodePerspective.enabled (and .Values.nodeFacts.enabled .Values.nodeFacts.hostNetworkNamespace) -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when a monitoring.coreos.com object of kind $kind is to be rendered: enabled true, or auto and either
     prometheus.stack says kube-prometheus-stack or the cluster serves the kind (`helm install` only: `helm
     template` and GitOps renderers see no cluster). Called with (list $ enabledValue kind). */}}
{{- define "netpath.operatorObject" -}}
{{- $root := index . 0 -}}
{{- $enabled := index . 1 -}}
{{- $kind := index . 2 -}}
{{- if eq (toString $enabled) "true" -}}
true
{{- else if and (eq (toString $enabled) "auto") (eq $root.Values.prometheus.stack "kube-prometheus-stack") -}}
true
{{- else if and (eq (toString $enabled) "auto") ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind)) -}}
true
{{- end -}}
{{- end -}}

{{/* Why an operator object is or is not rendered, for NOTES.txt. Called like netpath.operatorObject. */}}
{{- define "netpath.operatorReason" -}}
{{- $root := index . 0 -}}
{{- $enabled := toString (index . 1) -}}
{{- $kind := index . 2 -}}
{{- if eq $enabled "true" -}}enabled: true
{{- else if eq $enabled "false" -}}enabled: false
{{- else if eq $root.Values.prometheus.stack "kube-prometheus-stack" -}}enabled: auto, prometheus.stack=kube-prometheus-stack
{{- else if $root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind) -}}enabled: auto, the cluster serves monitoring.coreos.com/v1 {{ $kind }}
{{- else -}}enabled: auto, prometheus.stack is not kube-prometheus-stack and no cluster answered that it serves monitoring.coreos.com/v1 {{ $kind }} (helm template and GitOps tools never do): set prometheus.stack=kube-prometheus-stack or enabled=true
{{- end -}}
{{- end -}}

{{/* The job label the monitor gives every series: "netpath-exporter" (forced by a relabeling), or with
     prometheus.monitor.jobLabel the value of that label on the scraped Service (ServiceMonitor) or pod
     (PodMonitor), both of which carry the chart's labels. */}}
{{- define "netpath.job" -}}
{{- $label := .Values.prometheus.monitor.jobLabel -}}
{{- if not $label -}}
netpath-exporter
{{- else -}}
{{- $labels := include "netpath.labels" . | fromYaml -}}
{{- if eq .Values.prometheus.monitor.kind "PodMonitor" -}}
{{- $labels = merge $labels .Values.podLabels -}}
{{- else -}}
{{- $_ := set $labels "app.kubernetes.io/component" "peers" -}}
{{- end -}}
{{- if not (hasKey $labels $label) -}}
{{- fail (printf "prometheus.monitor.jobLabel: %q is not a label of the chart's %s target; one of: %s" $label (ternary "pod" "Service" (eq .Values.prometheus.monitor.kind "PodMonitor")) (keys $labels | sortAlpha | join ", ")) -}}
{{- end -}}
{{- get $labels $label -}}
{{- end -}}
{{- end -}}

{{/* Base of the alerts' runbook_url in alerts/ (docs/alerts.md); the PrometheusRule swaps in
     prometheus.rules.runbookUrl. */}}
{{- define "netpath.defaultRunbookUrl" -}}
https://github.com/netpath-exporter/netpath-exporter/blob/main/docs/runbooks/
{{- end -}}

{{/* The exporter's config file (docs: README "A config file", docs/discovery.md). source_node and the
     namespace come from the downward API (NODE_NAME, POD_NAMESPACE). */}}
{{- define "netpath.config" -}}
{{- $v := .Values -}}
{{- $domain := $v.cluster.domain -}}
{{- $targets := list -}}
{{- if $v.cluster.kubernetesServiceIP -}}
{{- $targets = append $targets (dict "name" "svc/default/kubernetes:443" "kind" "tcp" "path" "cluster_ip" "address" (printf "%s:443" $v.cluster.kubernetesServiceIP) "service" "default/kubernetes") -}}
{{- end -}}
{{- if $v.cluster.dnsServiceIP -}}
{{- $query := printf "kubernetes.default.svc.%s" $domain -}}
{{- $dns := dict "name" (printf "dns/kube-dns/%s" $query) "kind" "dns" "path" "dns" "address" $v.cluster.dnsServiceIP "transports" $v.probes.dns.transports "query" $query "service" $v.cluster.dnsService -}}
{{- if $v.cluster.kubernetesServiceIP -}}
{{- $_ := set $dns "expect" (list $v.cluster.kubernetesServiceIP) -}}
{{- end -}}
{{- $targets = append $targets $dns -}}
{{- end -}}
{{- $targets = concat $targets $v.probes.extraTargets -}}
{{- $peerSelector := printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "netpath.name" .) .Release.Name -}}
{{- $ingress := false -}}
{{- if $v.cluster.ingressControllerService -}}
{{- $ingress = dict "controller_service" $v.cluster.ingressControllerService "host_ports" $v.probes.ingressHostPorts -}}
{{- end -}}
{{- $discovery := dict
      "service" (include "netpath.fullname" .)
      "service_port" (int $v.port)
      "cluster_domain" $domain
      "peers" (dict "label_selector" $peerSelector "port" (int $v.port) "k" $v.probes.peers.k "all_up_to" (int $v.probes.peers.allUpTo))
      "services" $v.probes.services
      "namespaces" (dict "allow" $v.probes.namespaces.allow "deny" $v.probes.namespaces.deny)
      "pod_cidrs" $v.cluster.podCIDRs
      "service_cidrs" $v.cluster.serviceCIDRs
      "dns" (dict "service" $v.cluster.dnsService "names" $v.probes.dns.names "transports" $v.probes.dns.transports)
      "ingress" $ingress -}}
{{- $facts := dict "enabled" $v.nodeFacts.enabled "interval" $v.nodeFacts.interval -}}
{{- if $v.nodeFacts.hostNetworkNamespace -}}
{{- $_ := set $facts "netns" "/proc/1/ns/net" -}}
{{- end -}}
{{- $config := dict
      "listen" (printf "0.0.0.0:%d" (int $v.port))
      "defaults" (dict "interval" $v.probes.interval "timeout" $v.probes.timeout)
      "discovery" $discovery
      "node_facts" $facts
      "node_perspective" (dict "enabled" $v.nodePerspective.enabled "netns" "/proc/1/ns/net")
      "peer_reports" (dict "enabled" $v.peerReports.enabled "interval" $v.peerReports.interval) -}}
{{- if $targets -}}
{{- $_ := set $config "targets" $targets -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
