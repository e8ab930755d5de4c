"""Test agent: starts a child that sleeps, writes the child's pid to argv[1], then sleeps or exits.

argv: PID_FILE MODE, MODE "hang" (sleep until killed, ignoring SIGTERM when "hang-ignore-term")
or "exit" (exit 0 at once, leaving the sleeping child behind in the process group).
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

pid_file, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "hang-ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "300"])
pid_file.write_text(str(child.pid))
if mode == "exit":
    sys.exit(0)
while True:
    time.sleep(60)
