{{- define "orderwatch.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orderwatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "orderwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "orderwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "orderwatch.selector" -}}
app.kubernetes.io/name: {{ include "orderwatch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "orderwatch.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Refuse values that cannot work, before anything is rendered. */}}
{{- define "orderwatch.validate" -}}
{{- $p := int .Values.kafka.partitions -}}
{{- if lt $p 1 -}}
{{- fail (printf "kafka.partitions must be >= 1, got %v" .Values.kafka.partitions) -}}
{{- end -}}
{{- if gt (int .Values.detector.replicas) $p -}}
{{- fail (printf "detector.replicas (%v) must not exceed kafka.partitions (%v): a worker without a partition only idles" .Values.detector.replicas $p) -}}
{{- end -}}
{{- if and .Values.handlers.enabled (gt (int .Values.handlers.replicas) $p) -}}
{{- fail (printf "handlers.replicas (%v) must not exceed kafka.partitions (%v): order-exceptions has that many partitions, and a handler without one never becomes ready" .Values.handlers.replicas $p) -}}
{{- end -}}
{{- if not (or (hasPrefix "memory://" .Values.detector.store) (hasPrefix "rocksdb://" .Values.detector.store)) -}}
{{- fail (printf "detector.store must be memory:// or rocksdb://, got %q" .Values.detector.store) -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.existingSecret) -}}
{{- fail "kafka.sasl.mechanism is set: name the Secret with the credentials in kafka.sasl.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* The environment every worker shares: settings from values, secrets only by reference. */}}
{{- define "orderwatch.env" -}}
- name: ORDERWATCH_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: ORDERWATCH_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: ORDERWATCH_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: ORDERWATCH_APP_ID
  value: {{ .Values.appId | quote }}
- name: ORDERWATCH_STORE
  value: {{ .Values.detector.store | quote }}
- name: ORDERWATCH_CLOCK
  value: {{ .Values.detector.clock | quote }}
- name: ORDERWATCH_WEB_PORT
  value: {{ .Values.webPort | quote }}
# every interface: the kubelet's probes and Prometheus come from outside the pod
- name: ORDERWATCH_WEB_BIND
  value: "0.0.0.0"
# the URL other workers and the ops API give for this worker
- name: ORDERWATCH_WEB_HOST
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
- name: ORDERWATCH_DATA_DIR
  value: /var/lib/orderwatch
- name: ORDERWATCH_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.caFile }}
- name: ORDERWATCH_SSL_CAFILE
  value: {{ .Values.kafka.caFile | quote }}
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- name: ORDERWATCH_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: ORDERWATCH_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.sasl.existingSecret | quote }}, key: {{ .Values.kafka.sasl.usernameKey | quote }}}
- name: ORDERWATCH_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.kafka.sasl.existingSecret | quote }}, key: {{ .Values.kafka.sasl.passwordKey | quote }}}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: ORDERWATCH_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.existingSecret | quote }}, key: {{ .Values.redis.urlKey | quote }}}
{{- else }}
- name: ORDERWATCH_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
- name: ORDERWATCH_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
{{- if .Values.api.existingSecret }}
- name: ORDERWATCH_API_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.api.existingSecret | quote }}, key: {{ .Values.api.tokenKey | quote }}}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "orderwatch.probes" -}}
livenessProbe:
  httpGet: {path: /health, port: web}
  initialDelaySeconds: 30
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 4
readinessProbe:
  httpGet: {path: {{ .ready }}, port: web}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
startupProbe:
  httpGet: {path: /health, port: web}
  periodSeconds: 5
  failureThreshold: 60
{{- end -}}
