"""The cases of bench/hostile.py and what sends and judges them, one family a module:
limits (the target, the case sizes), dicom and images (case files built at run time), cases
(the list of cases), server and cli (sending a case to `boneage serve` or `boneage predict`),
memory (a process's RSS from /proc) and judging (an answer against the target)."""
