"""The issue's baseline: a minimal pynetdicom C-STORE receiver (no database, no checks).

Three modes. The first two are the minimal receivers of REFERENCE.md section 5: `raw` writes the
received bytes as a Part 10 file without decoding them (the issue's 1 : 4.6 baseline), `decode`
is pynetdicom's documented storage SCP (decode the dataset, save it again). The third,
`durable`, is `raw` with the write the same issue demands of the node before it answers
(temporary file, fsync, rename, folder fsync): the part of the node's cost that is the required
durability, measured on its own. It is written out here rather than imported from node/spool.py
so that the baseline stays a stand-alone minimal receiver.

python tests/bench/minimal_pynetdicom_scp.py PORT OUT_DIR raw|decode|durable
Prints "ready" once it listens; runs until killed. Run beside `ctnode serve` by
test_bench_node_receive so the ratio is measured, not assumed.
"""

import os
import sys
import threading
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt


def main() -> None:
    port, out, mode = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def save_decoded(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        dataset.save_as(out / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    def save_raw(event: evt.Event) -> int:
        path = out / f"{event.request.AffectedSOPInstanceUID}.dcm"
        path.write_bytes(event.encoded_dataset(include_meta=True))
        return 0x0000

    def save_raw_durably(event: evt.Event) -> int:
        path = out / f"{event.request.AffectedSOPInstanceUID}.dcm"
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as file:
            file.write(event.encoded_dataset(include_meta=True))
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        folder = os.open(out, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a power cut
        finally:
            os.close(folder)
        return 0x0000

    handle_store = {"raw": save_raw, "decode": save_decoded, "durable": save_raw_durably}[mode]

    ae = AE(ae_title="MINIMAL")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )
    print("ready", flush=True)
    threading.Event().wait()  # until the benchmark terminates the process


if __name__ == "__main__":
    main()
