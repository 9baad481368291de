#!/usr/bin/env bash
# Local orderwatch stack without Docker: a single-node KRaft Kafka broker
# (jars from Maven Central, see deploy/local/kafka/pom.xml) and a private Redis.
#
#   deploy/local/stack.sh up       start Kafka + Redis, create the topics (idempotent)
#   deploy/local/stack.sh ensure   `up` unless Kafka and Redis already answer on their ports
#                                  (whoever started them; `make test` runs this)
#   deploy/local/stack.sh down     stop both (fine when nothing runs)
#   deploy/local/stack.sh status   what runs, on which port (exit 1 if not all up)
#   deploy/local/stack.sh reset    down + delete all data and logs (keeps the jars)
#   deploy/local/stack.sh kafka    start only a Kafka broker (no Redis, no topics): with
#                                  ORDERWATCH_LOCAL_DIR and its own ports, a test's private broker
#
# Everything (jars, data, logs, pid files) lives under <repo>/.local/ unless ORDERWATCH_LOCAL_DIR says.
# Environment (defaults in brackets):
#   ORDERWATCH_LOCAL_DIR [<repo>/.local]     data, config, logs and pid files (the jars stay in
#                                            <repo>/.local/kafka/libs, shared)
#   ORDERWATCH_KAFKA_PORT [9092]             PLAINTEXT listener on 127.0.0.1
#   ORDERWATCH_KAFKA_CONTROLLER_PORT [9093]  KRaft controller listener on 127.0.0.1
#   ORDERWATCH_REDIS_PORT [6379]             Redis on 127.0.0.1
#   ORDERWATCH_TOPIC_PREFIX []               prefix for every topic name
#   ORDERWATCH_PARTITIONS [4]                partitions of every topic (co-partitioned)
#   ORDERWATCH_KAFKA_TIMEOUT [90]            seconds to wait for the broker
#   ORDERWATCH_KAFKA_HEAP_OPTS [-Xms512m -Xmx1g]
#   JAVA [java]                              Java 11+ (17 recommended)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LOCAL="${ORDERWATCH_LOCAL_DIR:-$ROOT/.local}"
POM="$ROOT/deploy/local/kafka/pom.xml"

KAFKA_DIR="$LOCAL/kafka"
KAFKA_LIBS="$ROOT/.local/kafka/libs"   # one download, whatever ORDERWATCH_LOCAL_DIR says
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CONF_DIR="$KAFKA_DIR/config"
KAFKA_CONF="$KAFKA_CONF_DIR/server.properties"
KAFKA_LOG4J="$KAFKA_CONF_DIR/log4j.properties"
TOOLS_LOG4J="$KAFKA_CONF_DIR/tools-log4j.properties"
ADMIN_CONF="$KAFKA_CONF_DIR/admin.properties"   # topic creation: patient
PROBE_CONF="$KAFKA_CONF_DIR/probe.properties"   # readiness probe: fails fast, retried
KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/broker.log"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
MVN_LOG="$KAFKA_DIR/mvn.log"

REDIS_DIR="$LOCAL/redis"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"
REDIS_PORTFILE="$REDIS_DIR/port"

KAFKA_PORT="${ORDERWATCH_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${ORDERWATCH_KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${ORDERWATCH_REDIS_PORT:-6379}"
TOPIC_PREFIX="${ORDERWATCH_TOPIC_PREFIX:-}"
PARTITIONS="${ORDERWATCH_PARTITIONS:-4}"
KAFKA_TIMEOUT="${ORDERWATCH_KAFKA_TIMEOUT:-90}"
KAFKA_HEAP_OPTS="${ORDERWATCH_KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
JAVA="${JAVA:-java}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

# JVM flags for the short-lived CLI tools: favour start-up time over throughput.
CLI_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

# name[:compact]; all get $PARTITIONS partitions, replication factor 1.
# orders/payments/logistics (and inventory) are co-partitioned: same count.
TOPICS=(orders payments logistics inventory orders-dlq order-exceptions:compact blocklist:compact order-actions)
CO_PARTITIONED=(orders payments logistics inventory)

# ---------------------------------------------------------------- helpers

log()  { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

rel() { printf '%s' "${1#"$ROOT"/}"; }   # path relative to the repo, for messages

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

port_open() {   # port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_matches() {  # pid_matches PID PATTERN: PID alive and its command line contains PATTERN
    local pid="$1" pattern="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 0   # no /proc: trust kill -0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

read_pid() { [[ -f "$1" ]] && tr -dc '0-9' <"$1" || true; }

kafka_pid() {    # prints the pid of our broker if it runs, else nothing
    local pid
    pid="$(read_pid "$KAFKA_PIDFILE")"
    if [[ -n "$pid" ]] && pid_matches "$pid" "$KAFKA_CONF"; then
        printf '%s' "$pid"
    fi
}

redis_pid() {
    local pid
    pid="$(read_pid "$REDIS_PIDFILE")"
    if [[ -n "$pid" ]] && pid_matches "$pid" "redis-server"; then
        printf '%s' "$pid"
    fi
}

validate_env() {
    local p
    for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$REDIS_PORT"; do
        [[ "$p" =~ ^[0-9]+$ ]] && (( p > 0 && p < 65536 )) || die "invalid port: '$p'"
    done
    [[ "$KAFKA_PORT" != "$CONTROLLER_PORT" ]] || die "ORDERWATCH_KAFKA_PORT and ORDERWATCH_KAFKA_CONTROLLER_PORT must differ"
    [[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "ORDERWATCH_PARTITIONS must be a positive integer, got '$PARTITIONS'"
    [[ "$KAFKA_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "ORDERWATCH_KAFKA_TIMEOUT must be a positive integer, got '$KAFKA_TIMEOUT'"
    [[ "$TOPIC_PREFIX" =~ ^[A-Za-z0-9._-]*$ ]] || die "ORDERWATCH_TOPIC_PREFIX may only contain [A-Za-z0-9._-], got '$TOPIC_PREFIX'"
}

# ---------------------------------------------------------------- kafka

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (set JAVA=/path/to/java); Kafka 3.9 needs Java 11+"
    local v major
    v="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')"
    major="${v%%.*}"
    [[ "$major" == 1 ]] && major="$(cut -d. -f2 <<<"$v")"
    [[ "$major" =~ ^[0-9]+$ ]] && (( major >= 11 )) || die "Kafka 3.9 needs Java 11+, '$JAVA' is version '$v'"
}

ensure_kafka_libs() {
    local want have start tmp n
    want="$(sha256sum "$POM" | cut -d' ' -f1)"
    have="$(cat "$KAFKA_LIBS/.pom.sha256" 2>/dev/null || true)"
    if [[ "$want" == "$have" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null \
        && compgen -G "$KAFKA_LIBS/kafka-tools-*.jar" >/dev/null; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn (Maven) is needed once to fetch the Kafka jars from Maven Central into $(rel "$KAFKA_LIBS")"
    log "kafka: fetching jars from Maven Central with mvn into $(rel "$KAFKA_LIBS") (one-time; ~1 min with an empty ~/.m2; log: $(rel "$MVN_LOG"))"
    start="$(now)"
    mkdir -p "$KAFKA_DIR" "${KAFKA_LIBS%/*}"
    tmp="$KAFKA_LIBS.tmp"
    rm -rf "$tmp"
    if ! mvn -B -ntp -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" </dev/null >"$MVN_LOG" 2>&1; then
        tail -n 30 "$MVN_LOG" >&2 || true
        die "mvn could not fetch the Kafka jars (full log: $(rel "$MVN_LOG"))"
    fi
    n="$(find "$tmp" -name '*.jar' | wc -l)"
    (( n > 0 )) || die "mvn succeeded but copied no jars (see $(rel "$MVN_LOG"))"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    printf '%s\n' "$want" >"$KAFKA_LIBS/.pom.sha256"
    log "kafka: $n jars ($(du -sh "$KAFKA_LIBS" | cut -f1)) ready in $(elapsed "$start")s"
}

kafka_cli() {   # kafka_cli MAIN_CLASS ARGS...: run a Kafka CLI tool on our classpath
    "$JAVA" "${CLI_JVM_OPTS[@]}" -Dlog4j.configuration="file:$TOOLS_LOG4J" -cp "$KAFKA_LIBS/*" "$@"
}

write_kafka_config() {
    mkdir -p "$KAFKA_CONF_DIR" "$KAFKA_DATA"
    cat >"$KAFKA_CONF" <<EOF
# Generated by deploy/local/stack.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA

# single node
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics are created explicitly (orderwatch topics create; faust declares its changelogs), as in
# production: a client asking for a missing topic's metadata must not create it with 1 partition.
auto.create.topics.enable=false
delete.topic.enable=true

# keep local disk use modest
log.retention.hours=168
log.segment.bytes=104857600
log.retention.check.interval.ms=300000
EOF
    cat >"$KAFKA_LOG4J" <<'EOF'
# Broker logging: everything goes to stdout, which stack.sh redirects to broker.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
    cat >"$TOOLS_LOG4J" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
    cat >"$ADMIN_CONF" <<'EOF'
request.timeout.ms=15000
default.api.timeout.ms=60000
EOF
    cat >"$PROBE_CONF" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

format_kafka_storage() {
    [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
    local cid
    if [[ ! -s "$KAFKA_CLUSTER_ID_FILE" ]]; then
        cid="$(kafka_cli kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 | tr -d '[:space:]')"
        [[ -n "$cid" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
        printf '%s\n' "$cid" >"$KAFKA_CLUSTER_ID_FILE"
    fi
    cid="$(tr -d '[:space:]' <"$KAFKA_CLUSTER_ID_FILE")"
    log "kafka: formatting storage in $(rel "$KAFKA_DATA") (cluster id $cid)"
    local out
    if ! out="$(kafka_cli kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_CONF" --ignore-formatted 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "formatting Kafka storage failed"
    fi
}

kafka_fail() {   # kafka_fail MESSAGE: show the end of the broker log and exit
    printf -- '---- last lines of %s ----\n' "$(rel "$KAFKA_LOG")" >&2
    tail -n 40 "$KAFKA_LOG" >&2 2>/dev/null || true
    printf -- '----\n' >&2
    die "$1"
}

# Waits until the broker accepts connections and answers an admin (metadata)
# request. Leaves the topic list in KAFKA_TOPIC_LIST.
KAFKA_TOPIC_LIST=""
wait_kafka_ready() {
    local pid="$1" start="$2" deadline=$((SECONDS + KAFKA_TIMEOUT)) err="$KAFKA_DIR/ready.err"
    mkdir -p "$KAFKA_CONF_DIR"
    [[ -f "$TOOLS_LOG4J" && -f "$ADMIN_CONF" && -f "$PROBE_CONF" ]] || write_kafka_config
    # kill -0, not kafka_pid: until the background shell has exec'd java, its command line is
    # this script's, and kafka_pid (which checks it) would call a starting broker gone.
    until port_open "$KAFKA_PORT"; do
        kill -0 "$pid" 2>/dev/null || kafka_fail "the Kafka broker (pid $pid) exited during start-up"
        (( SECONDS < deadline )) || kafka_fail "Kafka did not open 127.0.0.1:$KAFKA_PORT within ${KAFKA_TIMEOUT}s (still running as pid $pid; 'stack.sh down' stops it)"
        sleep 0.2
    done
    until KAFKA_TOPIC_LIST="$(timeout 30 "$JAVA" "${CLI_JVM_OPTS[@]}" -Dlog4j.configuration="file:$TOOLS_LOG4J" \
            -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
            --command-config "$PROBE_CONF" --list 2>"$err")"; do
        kill -0 "$pid" 2>/dev/null || kafka_fail "the Kafka broker (pid $pid) exited during start-up"
        if (( SECONDS >= deadline )); then
            tail -n 5 "$err" >&2 || true
            kafka_fail "Kafka on $BOOTSTRAP did not answer metadata requests within ${KAFKA_TIMEOUT}s (still running as pid $pid; 'stack.sh down' stops it)"
        fi
        sleep 0.5
    done
    rm -f "$err"
    if [[ "$3" == started ]]; then
        log "kafka: ready on $BOOTSTRAP after $(elapsed "$start")s"
    else
        log "kafka: answers on $BOOTSTRAP"
    fi
}

start_kafka() {
    check_java
    ensure_kafka_libs
    local pid start
    pid="$(kafka_pid)"
    if [[ -n "$pid" ]]; then
        local running_port
        running_port="$(sed -n 's#^advertised.listeners=PLAINTEXT://[^:]*:##p' "$KAFKA_CONF" 2>/dev/null || true)"
        if [[ -n "$running_port" && "$running_port" != "$KAFKA_PORT" ]]; then
            die "Kafka already runs (pid $pid) on port $running_port, but ORDERWATCH_KAFKA_PORT=$KAFKA_PORT; run 'stack.sh down' first"
        fi
        log "kafka: already running (pid $pid) on $BOOTSTRAP"
        wait_kafka_ready "$pid" "$(now)" running
        return 0
    else
        rm -f "$KAFKA_PIDFILE"
        port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is already in use by another process (set ORDERWATCH_KAFKA_PORT)"
        port_open "$CONTROLLER_PORT" && die "port $CONTROLLER_PORT is already in use by another process (set ORDERWATCH_KAFKA_CONTROLLER_PORT)"
        write_kafka_config
        format_kafka_storage
        [[ -f "$KAFKA_LOG" ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.1"
        log "kafka: starting broker on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT, log: $(rel "$KAFKA_LOG"))"
        start="$(now)"
        # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
        nohup "$JAVA" $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
            -Djava.awt.headless=true -Dlog4j.configuration="file:$KAFKA_LOG4J" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" \
            </dev/null >"$KAFKA_LOG" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$KAFKA_PIDFILE"
    fi
    wait_kafka_ready "$pid" "$start" started
}

# Creates the missing topics (in parallel: each CLI call is a JVM start) and
# checks the partition count of those that already existed.
ensure_topics() {
    local spec name compact pids=() names=() kinds=() tmpdir existing=() i failed=0
    tmpdir="$(mktemp -d "$KAFKA_DIR/topics.XXXXXX")"
    for spec in "${TOPICS[@]}"; do
        name="$TOPIC_PREFIX${spec%%:*}"
        compact=""
        [[ "$spec" == *:compact ]] && compact=1
        if grep -qxF -- "$name" <<<"$KAFKA_TOPIC_LIST"; then
            existing+=("$name")
            continue
        fi
        kafka_cli org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
            --command-config "$ADMIN_CONF" --create --if-not-exists --topic "$name" \
            --partitions "$PARTITIONS" --replication-factor 1 \
            ${compact:+--config cleanup.policy=compact} >"$tmpdir/$name.out" 2>&1 &
        pids+=($!)
        names+=("$name")
        kinds+=("${compact:+, compacted}")
    done
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            log "kafka: created topic ${names[$i]} ($PARTITIONS partitions${kinds[$i]})"
        else
            failed=1
            cat "$tmpdir/${names[$i]}.out" >&2 || true
            warn "could not create topic ${names[$i]}"
        fi
    done
    rm -rf "$tmpdir"
    (( failed == 0 )) || die "topic creation failed"

    if (( ${#existing[@]} > 0 )); then
        check_existing_topics "${existing[@]}"
    fi
}

check_existing_topics() {
    local desc line name count cfg spec want_compact co_counts="" co_found=0
    desc="$(kafka_cli org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
        --command-config "$ADMIN_CONF" --describe --exclude-internal)" \
        || die "could not describe topics on $BOOTSTRAP"
    # summary lines: "Topic: <name>\tTopicId: ..\tPartitionCount: N\tReplicationFactor: 1\tConfigs: k=v,.."
    for name in "$@"; do
        line="$(awk -F'\t' -v t="Topic: $name" '$1 == t { print; exit }' <<<"$desc")"
        count="$(grep -o 'PartitionCount: [0-9]*' <<<"$line" | grep -o '[0-9]*' || true)"
        cfg="$(sed -n 's/.*Configs: *//p' <<<"$line")"
        want_compact=""
        for spec in "${TOPICS[@]}"; do
            [[ "$TOPIC_PREFIX${spec%%:*}" == "$name" && "$spec" == *:compact ]] && want_compact=1
        done
        if [[ -n "$want_compact" && "$cfg" != *cleanup.policy=compact* ]]; then
            warn "topic $name exists but is not compacted (Configs: ${cfg:-none}); 'stack.sh reset' recreates it"
        fi
        if [[ -n "$count" && "$count" != "$PARTITIONS" ]]; then
            warn "topic $name exists with $count partitions, ORDERWATCH_PARTITIONS=$PARTITIONS ('stack.sh reset' recreates it)"
        fi
        for spec in "${CO_PARTITIONED[@]}"; do
            if [[ "$TOPIC_PREFIX$spec" == "$name" ]]; then
                co_counts+="$count "
                co_found=$((co_found + 1))
            fi
        done
    done
    log "kafka: topics already present: $*"
    # co-partitioned topics must agree; the ones just created have $PARTITIONS
    (( co_found < ${#CO_PARTITIONED[@]} )) && co_counts+="$PARTITIONS"
    local distinct
    distinct="$(tr ' ' '\n' <<<"$co_counts" | grep -v '^$' | sort -u | wc -l)"
    if (( distinct > 1 )); then
        die "co-partitioned topics (${CO_PARTITIONED[*]/#/$TOPIC_PREFIX}) have different partition counts; run 'stack.sh reset'"
    fi
}

stop_kafka() {
    local pid i
    pid="$(kafka_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$KAFKA_PIDFILE"
        log "kafka: not running"
        return 0
    fi
    log "kafka: stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "Kafka (pid $pid) did not stop within 30s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$KAFKA_PIDFILE"
    log "kafka: stopped"
}

# ---------------------------------------------------------------- redis

ensure_redis_installed() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
    local sudo=() apt_log="$REDIS_DIR/apt.log"
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            die "redis-server is not installed and we are not root; run: sudo apt-get install -y redis-server"
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || die "redis-server is not installed and apt-get is not available; install Redis 6+ yourself"
    mkdir -p "$REDIS_DIR"
    log "redis: redis-server not found, installing it with apt-get (one-time; log: $(rel "$apt_log"))"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; \
         } </dev/null >"$apt_log" 2>&1; then
        tail -n 20 "$apt_log" >&2 || true
        die "apt-get install redis-server failed"
    fi
    # The package starts the system service where an init system allows it; we
    # run our own instance, so stop that one (we just installed it) to free the port.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        log "redis: stopping the system redis-server service that apt just started"
        "${sudo[@]}" systemctl stop redis-server || warn "could not stop the system redis-server service"
    elif command -v service >/dev/null 2>&1 && service redis-server status >/dev/null 2>&1; then
        log "redis: stopping the system redis-server service that apt just started"
        "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || warn "could not stop the system redis-server service"
    fi
    log "redis: installed $(redis-server --version | awk '{ sub(/^v=/, "", $3); print $3 }')"
}

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true)" == PONG ]]; }

start_redis() {
    ensure_redis_installed
    local pid i
    pid="$(redis_pid)"
    if [[ -n "$pid" ]]; then
        local running_port
        running_port="$(cat "$REDIS_PORTFILE" 2>/dev/null || true)"
        if [[ -n "$running_port" && "$running_port" != "$REDIS_PORT" ]]; then
            die "Redis already runs (pid $pid) on port $running_port, but ORDERWATCH_REDIS_PORT=$REDIS_PORT; run 'stack.sh down' first"
        fi
        log "redis: already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    else
        rm -f "$REDIS_PIDFILE"
        port_open "$REDIS_PORT" && die "port $REDIS_PORT is already in use by another process (a system redis-server? stop it, or set ORDERWATCH_REDIS_PORT)"
        mkdir -p "$REDIS_DIR"
        log "redis: starting on 127.0.0.1:$REDIS_PORT (log: $(rel "$REDIS_LOG"))"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
            --dir "$REDIS_DIR" --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
            --save '' --appendonly no </dev/null \
            || { tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true; die "redis-server failed to start"; }
        printf '%s\n' "$REDIS_PORT" >"$REDIS_PORTFILE"
    fi
    for ((i = 0; i < 100; i++)); do
        redis_ping "$REDIS_PORT" && [[ -n "$(redis_pid)" ]] && { log "redis: ready (PONG) on 127.0.0.1:$REDIS_PORT"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
    die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within 10s"
}

stop_redis() {
    local pid i
    pid="$(redis_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$REDIS_PIDFILE" "$REDIS_PORTFILE"
        log "redis: not running"
        return 0
    fi
    log "redis: stopping (pid $pid)"
    # SIGTERM = graceful shutdown; with --save '' nothing is written.
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "Redis (pid $pid) did not stop within 10s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$REDIS_PIDFILE" "$REDIS_PORTFILE"
    log "redis: stopped"
}

# ---------------------------------------------------------------- commands

cmd_up() {
    validate_env
    mkdir -p "$LOCAL"
    local start
    start="$(now)"
    start_redis
    start_kafka
    ensure_topics
    log ""
    log "stack is up ($(elapsed "$start")s):"
    log "  kafka  bootstrap servers  $BOOTSTRAP"
    log "  redis  redis://127.0.0.1:$REDIS_PORT/0"
    log "  topics prefix '${TOPIC_PREFIX}', $PARTITIONS partitions each"
    log "  data and logs under $(rel "$LOCAL")/ ('deploy/local/stack.sh down' stops it)"
}

cmd_kafka() {
    validate_env
    mkdir -p "$LOCAL"
    start_kafka
}

cmd_ensure() {
    validate_env
    if port_open "$KAFKA_PORT" && redis_ping "$REDIS_PORT"; then
        log "stack: Kafka on 127.0.0.1:$KAFKA_PORT and Redis on 127.0.0.1:$REDIS_PORT already answer; using them"
        return 0
    fi
    cmd_up
}

cmd_down() {
    stop_kafka
    stop_redis
}

cmd_status() {
    local pid ok=0 port
    pid="$(kafka_pid)"
    if [[ -n "$pid" ]]; then
        port="$(sed -n 's#^advertised.listeners=PLAINTEXT://[^:]*:##p' "$KAFKA_CONF" 2>/dev/null || true)"
        if [[ -n "$port" ]] && port_open "$port"; then
            log "kafka: running (pid $pid) on 127.0.0.1:$port, controller on 127.0.0.1:$(sed -n 's#^controller.quorum.voters=1@[^:]*:##p' "$KAFKA_CONF")"
        else
            log "kafka: process running (pid $pid) but 127.0.0.1:${port:-?} is not accepting connections yet"
            ok=1
        fi
    else
        log "kafka: stopped"
        ok=1
    fi
    pid="$(redis_pid)"
    if [[ -n "$pid" ]]; then
        port="$(cat "$REDIS_PORTFILE" 2>/dev/null || printf '%s' "$REDIS_PORT")"
        if redis_ping "$port"; then
            log "redis: running (pid $pid) on 127.0.0.1:$port"
        else
            log "redis: process running (pid $pid) but 127.0.0.1:$port does not answer PING"
            ok=1
        fi
    else
        log "redis: stopped"
        ok=1
    fi
    log "data:  $(rel "$LOCAL")/ ($(du -sh --exclude=libs --exclude=libs.tmp "$LOCAL" 2>/dev/null | cut -f1 || echo 0) without jars)"
    return "$ok"
}

cmd_reset() {
    cmd_down
    log "reset: deleting Kafka and Redis data and logs under $(rel "$LOCAL")/ (keeping the jars in $(rel "$KAFKA_LIBS"))"
    rm -rf "$KAFKA_DATA" "$KAFKA_CONF_DIR" "$KAFKA_CLUSTER_ID_FILE" "$KAFKA_LOG" "$KAFKA_LOG.1" \
        "$KAFKA_DIR"/topics.* "$KAFKA_DIR/ready.err" "$KAFKA_LIBS.tmp" "$REDIS_DIR"
    log "reset: done"
}

usage() {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    up)     cmd_up ;;
    ensure) cmd_ensure ;;
    kafka)  cmd_kafka ;;
    down)   cmd_down ;;
    status) cmd_status ;;
    reset)  cmd_reset ;;
    -h|--help|help) usage ;;
    *)      usage >&2; exit 2 ;;
esac
