# Every command's options, as `sagakit COMMAND --help` prints them 100 columns wide.
for command in list show retry resolve skip signal cancel worker versions upgrade-saga ui \
    migrate graph demo; do
    echo "$ sagakit $command --help"
    sagakit "$command" --help
done
