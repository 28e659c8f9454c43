"""Running the study's processes: the one distributed relaunch, nodes, CPU workers, the cross-process
reference cache, job control and the output folder's locks."""
