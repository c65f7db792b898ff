#!/usr/bin/env bash
# agent-service.sh start|stop|status BINARY CONFIG RUNDIR
#
# The `service` commands the puppet suite gives class ferrofab::agent
# (service_provider => 'base') where there is no systemd: it runs the agent
# detached, with its pid in RUNDIR/agent.pid and its log in RUNDIR/agent.log.
# "start" returns once the local API answers, like the systemd units
# (Type=notify or ExecStartPost); "stop" waits until the agent has detached and exited.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 start|stop|status BINARY CONFIG RUNDIR" >&2; exit 2; }
cmd=$1 bin=$2 config=$3 dir=$4
pidfile=$dir/agent.pid
log=$dir/agent.log

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
    running && return 0
    mkdir -p "$dir"
    setsid "$bin" --config "$config" run >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local i
    for ((i = 0; i < 300; i++)); do
        "$bin" --config "$config" status >/dev/null 2>&1 && return 0
        running || { echo "agent exited; last log lines:" >&2; tail -n 20 "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "agent did not answer on its local API within 30s" >&2
    return 1
}

stop() {
    running || { rm -f "$pidfile"; return 0; }
    local pid i
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for ((i = 0; i < 900; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    echo "agent $pid did not stop within 90s; killing it" >&2
    kill -KILL "$pid"
    rm -f "$pidfile"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status) running ;;
    *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
