{{/* The release's full name, trimmed to what Kubernetes allows. */}}
{{- define "agora.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agora.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selects one target's pods: include "agora.selector" (list $ "hearing") */}}
{{- define "agora.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "agora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agora.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agora.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Who calls whom over gRPC (and identity's JWKS over HTTP): the NetworkPolicies and the
     service addresses come from this one table. */}}
{{- define "agora.calls" -}}
gateway: [hearing, response, identity, records, notification]
hearing: [identity]
response: [identity]
records: [identity, hearing, response]
notification: [identity]
identity: []
{{- end -}}

{{/* The targets that keep state in PostgreSQL and talk over NATS: all but the gateway. */}}
{{- define "agora.usesStore" -}}
{{- if ne . "gateway" }}true{{ end -}}
{{- end -}}

{{- define "agora.secretEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.existingSecret }}
      key: {{ index . 2 }}
{{- if gt (len .) 3 }}
      optional: {{ index . 3 }}
{{- end }}
{{- end -}}

{{/* The environment of one target: include "agora.env" (list $ "hearing") */}}
{{- define "agora.env" -}}
{{- $root := index . 0 -}}
{{- $target := index . 1 -}}
{{- $v := $root.Values -}}
{{- $full := include "agora.fullname" $root -}}
{{- $calls := include "agora.calls" $root | fromYaml -}}
{{- $keys := $v.secrets.keys -}}
- name: AGORA_TARGETS
  value: {{ $target }}
- name: AGORA_GRPC_ADDR
  value: "0.0.0.0:50051"
- name: AGORA_HTTP_ADDR
  value: "0.0.0.0:8080"
- name: AGORA_LOG_FORMAT
  value: {{ $v.telemetry.logFormat | quote }}
- name: RUST_LOG
  value: {{ $v.telemetry.logFilter | quote }}
{{- with $v.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: agora-{{ $target }}
{{ include "agora.secretEnv" (list $root "AGORA_PSEUDONYM_KEY" $keys.pseudonymKey) }}
{{ include "agora.secretEnv" (list $root "AGORA_SERVICE_SECRET" $keys.serviceSecret) }}
{{- if include "agora.usesStore" $target }}
{{ include "agora.secretEnv" (list $root "AGORA_DATABASE_URL" $keys.databaseUrl) }}
- name: AGORA_NATS_URL
  value: {{ $v.nats.url | quote }}
- name: AGORA_NATS_PREFIX
  value: {{ $v.nats.prefix | quote }}
- name: AGORA_NATS_REPLICAS
  value: {{ $v.nats.replicas | quote }}
{{- end }}
{{- range $callee := index $calls $target }}
- name: AGORA_{{ upper $callee }}_URL
  value: http://{{ $full }}-{{ $callee }}:50051
{{- end }}
{{- if and (include "agora.usesStore" $target) (ne $target "identity") }}
- name: AGORA_TOKEN_JWKS
  value: http://{{ $full }}-identity:8080/.well-known/jwks.json
{{- end }}
{{- if or (eq $target "hearing") (eq $target "response") }}
- name: AGORA_FILES
  value: {{ $v.files.url | quote }}
{{- end }}
{{- if eq $target "response" }}
- name: AGORA_RETENTION_DAYS
  value: {{ $v.retentionDays | quote }}
{{- with $v.clamd }}
- name: AGORA_CLAMD
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq $target "identity" }}
{{ include "agora.secretEnv" (list $root "AGORA_MASTER_KEY" $keys.masterKey) }}
{{ include "agora.secretEnv" (list $root "AGORA_PREVIOUS_MASTER_KEYS" $keys.previousMasterKeys true) }}
- name: AGORA_MASTER_KEY_ID
  value: {{ $v.masterKeyId | quote }}
- name: AGORA_ACCESS_TOKEN_MINUTES
  value: {{ $v.login.accessTokenMinutes | quote }}
- name: AGORA_REFRESH_TOKEN_HOURS
  value: {{ $v.login.refreshTokenHours | quote }}
{{- if $v.login.providers }}
- name: AGORA_LOGIN_PROVIDERS
  value: /etc/agora/login-providers.json
{{- end }}
{{- end }}
{{- if and $v.login.devLogin (or (eq $target "identity") (eq $target "gateway")) }}
- name: AGORA_DEV_LOGIN
  value: "true"
{{- end }}
{{- if eq $target "records" }}
- name: AGORA_RECORDS_CONFIG
  value: /etc/agora/records.json
{{ include "agora.secretEnv" (list $root "AGORA_SBSYS_CLIENT_SECRET" $keys.sbsysClientSecret true) }}
{{ include "agora.secretEnv" (list $root "AGORA_SBSYS_PASSWORD" $keys.sbsysPassword true) }}
{{- end }}
{{- if eq $target "notification" }}
- name: AGORA_NOTIFICATION_CONFIG
  value: /etc/agora/notification.json
{{- end }}
{{- if eq $target "gateway" }}
- name: AGORA_TRUST_FORWARDED_FOR
  value: "true"
- name: AGORA_RATE_LIMIT_PER_CLIENT
  value: {{ (index $v.targets "gateway").rateLimitPerClient | quote }}
- name: AGORA_RATE_LIMIT_PER_USER
  value: {{ (index $v.targets "gateway").rateLimitPerUser | quote }}
- name: AGORA_MAX_BODY_MB
  value: {{ (index $v.targets "gateway").maxBodyMB | default 120 | quote }}
{{- end }}
{{- range $name, $key := (index $v.secrets.extraEnv $target) }}
{{ include "agora.secretEnv" (list $root $name $key) }}
{{- end }}
{{- range $name, $value := (index $v.targets $target).env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The Key Vault CSI volume, mounted by every pod so that the synced Secret exists. */}}
{{- define "agora.keyVaultVolume" -}}
{{- if .Values.secrets.keyVault.enabled }}
- name: key-vault
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ include "agora.fullname" . }}
{{- end }}
{{- end -}}

{{- define "agora.keyVaultMount" -}}
{{- if .Values.secrets.keyVault.enabled }}
- name: key-vault
  mountPath: /mnt/secrets-store
  readOnly: true
{{- end }}
{{- end -}}

{{/* An egress rule to a server given by CIDRs or selectors: (list .Values.database port) */}}
{{- define "agora.egressTo" -}}
{{- $server := index . 0 -}}
{{- /* Neither CIDRs nor selectors: the port alone, to wherever the server is. */}}
- {{- if or $server.cidrs $server.namespaceSelector $server.podSelector }}
  to:
    {{- range $server.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- if or $server.namespaceSelector $server.podSelector }}
    - {{- with $server.namespaceSelector }}
      namespaceSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $server.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
  {{- end }}
  ports:
    - port: {{ index . 1 }}
      protocol: TCP
{{- end -}}
