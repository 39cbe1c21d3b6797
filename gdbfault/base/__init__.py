"""The ground floor: errors and exit codes, how a command ends (signals, teardown), outside tools, where built parts live."""
