"""The measurement families of bench/perf.py, one module each: common (running a child of
bench/perf_children/, the machine, the default params), preprocess, training (input, train,
epochs), pipeline (dvc, memory, precision-accuracy), scaling, and table (the printed summary)."""
