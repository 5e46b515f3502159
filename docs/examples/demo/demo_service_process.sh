# docs/demo.md, "Choreographed": one service as a process of its own. It prints
# "ready payments" once it is subscribed and stops cleanly on SIGTERM. Needs the Redis
# server at 127.0.0.1:6379; the stream is this run's own, and deleted at the end.
stream="orders-docs-$$-$RANDOM"
trap 'redis-cli -h 127.0.0.1 -p 6379 DEL "sagakit:$stream" > /dev/null' EXIT
mkfifo payments.log # so that `read` below waits for the line, however long it takes
# --8<-- [start:process]
export SAGAKIT_BROKER=redis://127.0.0.1:6379/0 # in the environment, where `ps` cannot see it
python -m sagakit.demo.processes payments --dir services/ --stream "$stream" > payments.log &
# --8<-- [end:process]
payments=$!
read -r -t 60 ready < payments.log
test "$ready" = "ready payments"
# Its command line names no broker: the URL came from the environment.
tr '\0' ' ' < "/proc/$payments/cmdline" > cmdline.txt
grep -q 'sagakit.demo.processes payments' cmdline.txt
if grep -q 'redis://' cmdline.txt; then exit 1; fi
kill -TERM "$payments"
wait "$payments" # exit 0: a clean stop
test -f services/payments.db # its tables, inbox and outbox, in the directory it made
