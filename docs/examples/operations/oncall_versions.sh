# docs/operations.md, "Deploy new versions": what is in flight per version, and who serves it.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:versions]
sagakit versions
# --8<-- [end:versions]
