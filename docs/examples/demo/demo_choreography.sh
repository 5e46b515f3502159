# docs/demo.md, "Choreographed": the same order as four services reacting to events, first
# as tasks of one process over the memory broker, then as four processes over Redis (the
# server at 127.0.0.1:6379; the demo uses a stream of its own and deletes it afterwards).
# --8<-- [start:tasks]
sagakit demo --flavor choreography --db sqlite:///demo.db
# --8<-- [end:tasks]
# --8<-- [start:redis]
sagakit demo --flavor choreography --db sqlite:///demo.db --broker redis://127.0.0.1:6379/0
# --8<-- [end:redis]

# Each run tracked three orders into the log: one completed, two compensated.
sagakit list --db sqlite:///demo.db --count > counts.txt
grep -qx 'order_choreography@1  completed    2' counts.txt
grep -qx 'order_choreography@1  compensated  4' counts.txt
# Orchestration needs no broker, and says so.
if sagakit demo --db memory:// --broker redis://127.0.0.1:6379/0 2> refused.txt; then exit 1; fi
grep -q '^error: --broker is for --flavor choreography' refused.txt
