"""Measure python-evtx against the evtx (pyevtx-rs) binding on the same files."""
import glob, resource, sys, time
files = sorted(glob.glob("/work/shared/data/evtx-attack-samples/*/*.evtx"))
which = sys.argv[1]
t = time.perf_counter(); n = 0; nbytes = 0
if which == "rust":
    from evtx import PyEvtxParser
    for f in files:
        for rec in PyEvtxParser(f).records():
            n += 1; nbytes += len(rec["data"])
else:
    import Evtx.Evtx as evtx
    for f in files:
        with evtx.Evtx(f) as log:
            for rec in log.records():
                n += 1; nbytes += len(rec.xml())
dt = time.perf_counter() - t
print(f"{which}: {n} records in {dt:.2f} s = {n/dt:.0f} records/s, {nbytes} XML chars, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MiB")
