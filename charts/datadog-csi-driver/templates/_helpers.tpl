{{/*
Fixed facts shared by the driver, the registrar and the CSIDriver object.
They are not values: the kubelet, the registrar and the admission controller
all expect exactly these.
*/}}
{{- define "datadog-csi-driver.driverName" -}}k8s.csi.datadoghq.com{{- end -}}
{{- define "datadog-csi-driver.kubeletRootDir" -}}{{ .Values.kubeletRootDir | default "/var/lib/kubelet" }}{{- end -}}
{{- define "datadog-csi-driver.pluginDir" -}}{{ include "datadog-csi-driver.kubeletRootDir" . }}/plugins/datadog.csi/driver{{- end -}}
{{- define "datadog-csi-driver.storageHostDir" -}}{{ include "datadog-csi-driver.kubeletRootDir" . }}/plugins/datadog.csi/storage{{- end -}}
{{- define "datadog-csi-driver.storagePath" -}}/var/lib/datadog-csi-driver{{- end -}}
{{- define "datadog-csi-driver.metricsPort" -}}5000{{- end -}}

{{/*
Chart name, shortened so that "<name>-node-server" stays a valid label value.
*/}}
{{- define "datadog-csi-driver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/*
DaemonSet name. It is derived from the chart name rather than the release
name so that the plain manifests in deploy/ and a Helm release agree.
*/}}
{{- define "datadog-csi-driver.daemonsetName" -}}
{{- $base := default (include "datadog-csi-driver.name" .) .Values.fullnameOverride -}}
{{- printf "%s-node-server" $base | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "datadog-csi-driver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels put on every object the chart renders.
*/}}
{{- define "datadog-csi-driver.labels" -}}
helm.sh/chart: {{ include "datadog-csi-driver.chart" . }}
app.kubernetes.io/name: {{ include "datadog-csi-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
DaemonSet selector. A selector cannot change after creation, so it holds only
the DaemonSet name.
*/}}
{{- define "datadog-csi-driver.selectorLabels" -}}
app: {{ include "datadog-csi-driver.daemonsetName" . }}
{{- end -}}

{{/*
Pod labels: user labels first, then the chart's own, which win on conflict.
admission.datadoghq.com/enabled=false keeps the Datadog admission controller
from injecting into the pods that serve its own volumes.
*/}}
{{- define "datadog-csi-driver.podLabels" -}}
{{- $own := dict "app" (include "datadog-csi-driver.daemonsetName" .) "admission.datadoghq.com/enabled" "false" "app.kubernetes.io/name" (include "datadog-csi-driver.name" .) "app.kubernetes.io/instance" .Release.Name -}}
{{- toYaml (merge $own (.Values.labels | default dict)) -}}
{{- end -}}

{{- define "datadog-csi-driver.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
Directories holding the two Agent sockets. They are mounted at the same path
inside the container so that the configured socket paths resolve there too.
*/}}
{{- define "datadog-csi-driver.apmSocketDir" -}}{{ dir .Values.sockets.apmHostSocketPath }}{{- end -}}
{{- define "datadog-csi-driver.dsdSocketDir" -}}{{ dir .Values.sockets.dsdHostSocketPath }}{{- end -}}
{{- define "datadog-csi-driver.socketsShareDir" -}}
{{- if eq (include "datadog-csi-driver.apmSocketDir" .) (include "datadog-csi-driver.dsdSocketDir" .) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
GKE Autopilot detection.

Autopilot rejects privileged workloads unless they match an allowlist that
Google publishes. Clusters at 1.32.1-gke.1729000 or newer serve the
WorkloadAllowlist and AllowlistSynchronizer kinds, through which the chart
installs Datadog's published CSI driver allowlist. Older Autopilot clusters
only serve AllowlistedV2Workload; the allowlist for that generation does not
admit the storage hostPath nor the APM settings, so those are left out.
*/}}
{{- define "datadog-csi-driver.gkeAutopilotWorkloadAllowlists" -}}
{{- if and (.Capabilities.APIVersions.Has "auto.gke.io/v1/AllowlistSynchronizer") (.Capabilities.APIVersions.Has "auto.gke.io/v1/WorkloadAllowlist") (semverCompare ">=1.32.1-gke.1729000" .Capabilities.KubeVersion.Version) -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{- define "datadog-csi-driver.gkeAutopilotLegacy" -}}
{{- if and (.Capabilities.APIVersions.Has "allowlistedv2workloads.auto.gke.io/v1/AllowlistedV2Workload") (ne (include "datadog-csi-driver.gkeAutopilotWorkloadAllowlists" .) "true") -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{- define "datadog-csi-driver.gkeAutopilot" -}}
{{- if or (eq (include "datadog-csi-driver.gkeAutopilotWorkloadAllowlists" .) "true") (eq (include "datadog-csi-driver.gkeAutopilotLegacy" .) "true") -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{/*
The allowlist the DaemonSet claims to match, and every allowlist file the
AllowlistSynchronizer keeps in the cluster. Older files stay listed because
GKE node versions pick up new allowlist versions at different times.
*/}}
{{- define "datadog-csi-driver.gkeMatchingAllowlist" -}}datadog-datadog-csi-driver-daemonset-exemption-v1.1.2{{- end -}}
{{- define "datadog-csi-driver.gkeAllowlistPaths" -}}
- Datadog/datadog-csi-driver/datadog-datadog-csi-driver-daemonset-exemption-v1.1.0.yaml
- Datadog/datadog-csi-driver/datadog-datadog-csi-driver-daemonset-exemption-v1.1.1.yaml
- Datadog/datadog-csi-driver/datadog-datadog-csi-driver-daemonset-exemption-v1.1.2.yaml
{{- end -}}

{{/*
Whether the APM settings (storage, DD_APM_ENABLED, registry allow list) are
rendered: everywhere but on legacy Autopilot.
*/}}
{{- define "datadog-csi-driver.apmConfigurable" -}}
{{- if ne (include "datadog-csi-driver.gkeAutopilotLegacy" .) "true" -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
Whether the driver actually serves APM volumes; published on the CSIDriver
object so that the Cluster Agent only routes library injection to it then.
*/}}
{{- define "datadog-csi-driver.apmActive" -}}
{{- if and .Values.apm.enabled (eq (include "datadog-csi-driver.apmConfigurable" .) "true") -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
Environment variables carrying registry credentials for instrumentation
libraries, one per secret: DD_APM_REGISTRY_AUTH_<n> = the secret's
.dockerconfigjson. apm.pullSecrets is used when set; otherwise the image pull
secrets are reused, marked optional because they may be of the older
kubernetes.io/dockercfg type that has no .dockerconfigjson key. Left out when
APM is off (nothing would use them) and on every Autopilot generation (the
published allowlists do not admit secret-backed variables).
*/}}
{{- define "datadog-csi-driver.registryAuthEnv" -}}
{{- if and .Values.apm.enabled (ne (include "datadog-csi-driver.gkeAutopilot" .) "true") -}}
{{- $secrets := .Values.apm.pullSecrets -}}
{{- $optional := false -}}
{{- if not $secrets -}}
{{- $secrets = .Values.image.pullSecrets -}}
{{- $optional = true -}}
{{- end -}}
{{- range $i, $secret := $secrets }}
- name: DD_APM_REGISTRY_AUTH_{{ $i }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name | quote }}
      key: .dockerconfigjson
      {{- if $optional }}
      optional: true
      {{- end }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Whether the driver posts AgentSocketStale events on pods: podEvents.enabled,
except on GKE Autopilot, whose allowlists admit neither a service account
token in the driver's pod nor any other driver arguments.
*/}}
{{- define "datadog-csi-driver.podEventsActive" -}}
{{- if and .Values.podEvents.enabled (ne (include "datadog-csi-driver.gkeAutopilot" .) "true") -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
Where the Kubernetes client looks for the in-cluster credentials.
*/}}
{{- define "datadog-csi-driver.serviceAccountDir" -}}/var/run/secrets/kubernetes.io/serviceaccount{{- end -}}

{{/*
driver.waitForAgentSocket when it asks for a wait (anything but zero); empty otherwise.
*/}}
{{- define "datadog-csi-driver.agentSocketWait" -}}
{{- $wait := .Values.driver.waitForAgentSocket | default "0s" | toString -}}
{{- if not (regexMatch "^0+(\\.0+)?(ms|s|m|h)?$" $wait) -}}{{ $wait }}{{- end -}}
{{- end -}}
