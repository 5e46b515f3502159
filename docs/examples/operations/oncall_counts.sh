# docs/operations.md, "Find the sagas that need you": the counts come first.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:count]
sagakit list --count
# --8<-- [end:count]
