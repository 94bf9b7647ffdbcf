"""The issue's baseline: a minimal pynetdicom C-STORE receiver (pynetdicom's documented storage
SCP: decode the dataset, save it as a Part 10 file; no fsync, no database, no checks).

python tests/bench/minimal_pynetdicom_scp.py PORT OUT_DIR
Prints "ready" once it listens; runs until killed. Run beside `ctnode serve` by
test_bench_node_receive so the ratio is measured, not assumed.
"""

import sys
import threading
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt


def main() -> None:
    port, out = int(sys.argv[1]), Path(sys.argv[2])

    def handle_store(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        dataset.save_as(out / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    ae = AE(ae_title="MINIMAL")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    print("ready", flush=True)
    threading.Event().wait()  # until the benchmark terminates the process


if __name__ == "__main__":
    main()
