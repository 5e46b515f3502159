sagakit --help
