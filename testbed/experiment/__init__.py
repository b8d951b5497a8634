"""What every workload kind shares when it runs on a testbed: node profiling (measured node
speeds -> the schedulers' network view), enforcement of a Plan's flows through the
controller (with recovery when the controller is lost), task processes on host, docker and
device nodes, sampling of links and nodes, the decision loop over arrivals and completions,
and the records written beside every kind's own tables (links, nodes, devices, flows, node
speeds, run.json). A workload kind (`testbed.kinds`) adds its model, its executor and its
trace tables on top."""
