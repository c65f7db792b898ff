#!/bin/sh
# Guest half of tests/kernel/kdriver.sh (busybox ash, see that file).
#
# Creates a foreign nvmet subsystem by hand (an admin's object the agent
# must never touch), starts ferrofab-agent with the kernel driver, then
# serves shell commands from the host: each connection to TCP port
# $CMD_PORT carries one line, which runs under sh; the answer is its
# output and a last line "FF-RC=<exit code>". The command `quit` ends
# the script with exit code 0.
. /usr/lib/ferrofab/ff-lib.sh

FOREIGN_NQN=nqn.2026-11.org.admin:foreign
mkdir -p /tmp/admin /var/lib/ferrofab/agent /tmp/kpool
truncate -s 16M /tmp/admin/foreign.img
ff_nvmet_subsys "$FOREIGN_NQN"
ff_nvmet_ns "$FOREIGN_NQN" 1 /tmp/admin/foreign.img

# The host NQN the layout registered for this node.
printf '%s\n' "$KG_HOSTNQN" >/var/lib/ferrofab/agent/hostnqn
printf '%s\n' "$KG_HOSTID" >/var/lib/ferrofab/agent/hostid

cat >/usr/local/bin/ff-agent-start <<'EOF'
#!/bin/sh
# Starts the agent in the background; its PID goes to /tmp/agent.pid.
ferrofab-agent --config /etc/ferrofab/agent.toml run >>/tmp/agent.log 2>&1 &
echo $! >/tmp/agent.pid
EOF
cat >/usr/local/bin/ff-agent-stop <<'EOF'
#!/bin/sh
# Stops the agent (SIGTERM) and waits for it to exit.
pid=$(cat /tmp/agent.pid)
kill "$pid"
i=0
while kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le 300 ] || { echo "agent $pid did not stop"; exit 1; }
    sleep 0.1
done
EOF
cat >/usr/local/bin/ff-wait <<'EOF'
#!/bin/sh
# ff-wait SECONDS CONDITION...: polls CONDITION (run by sh) every 0.2 s.
sec=$1; shift
i=0
while ! sh -c "$*" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt $((sec * 5)) ]; then echo "timed out after ${sec}s: $*"; exit 1; fi
    sleep 0.2
done
EOF
cat >/tmp/serve-one.sh <<'EOF'
#!/bin/sh
read -r line
if [ "$line" = quit ]; then touch /tmp/quit; echo "FF-RC=0"; exit 0; fi
sh -c "$line" </dev/null >/tmp/cmd.out 2>&1
rc=$?
cat /tmp/cmd.out
echo "FF-RC=$rc"
EOF
chmod +x /usr/local/bin/ff-agent-start /usr/local/bin/ff-agent-stop /usr/local/bin/ff-wait /tmp/serve-one.sh

ff-agent-start
ff_ready
while [ ! -f /tmp/quit ]; do
    nc -l -p "$CMD_PORT" -e /tmp/serve-one.sh </dev/null >/dev/null 2>&1 || sleep 0.1
done
exit 0
