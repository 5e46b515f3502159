sagakit demo --db sqlite:///demo.db > /dev/null   # what `make demo` ran, quietly
sagakit list --db sqlite:///demo.db               # one row per saga, newest first
sagakit list --db sqlite:///demo.db --status needs_attention --count
