"""node/service.py: the main thread's wait for SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# SIGTERM delivered to a thread other than the main one (the kernel may pick any thread of
# the process): the handler must still run and the wait end.
SIGNAL_TO_ANOTHER_THREAD = textwrap.dedent(
    """
    import signal, threading, time
    from node.service import stop_on_signals, wait_for

    def send_to_myself():
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(30)  # stay alive, as the node's threads do

    with stop_on_signals() as stop:
        threading.Thread(target=send_to_myself, daemon=True).start()
        wait_for(stop)
    print("stopped")
    """
)


def test_sigterm_received_by_another_thread_ends_the_wait() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_TO_ANOTHER_THREAD],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
