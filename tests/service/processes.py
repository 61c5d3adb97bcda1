"""Shared by the service's process-level tests: a small vancomycin cohort's plan, the offline
reference posterior, and `mipd` subprocesses."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from assimilation import Dose, load_model
from assimilation.events import Reading
from assimilation.online import init, update
from mipdstream.service.assimilator import patient_seed

MODEL = str(Path(__file__).parent / "models" / "serum_vancomycin.py")
PATIENTS = [f"patient-{k}" for k in range(8)]
PARTICLES, SEED = 128, 11


def plan(origin: float):
    """Per patient: two 1 g infusions (pump) and levels every 2 h (POC meter), true CL varying."""
    events = {}
    for k, patient in enumerate(PATIENTS):
        cl, v1 = 4.5 * (0.6 + 0.12 * k), 58.4
        doses = [(t, 1000.0) for t in (0.0, 12.0)]
        levels = []
        for t in np.arange(1.5, 24.0, 2.0):
            c = sum(a / cl * (1 - np.exp(-cl / v1)) * np.exp(-cl / v1 * (t - d - 1)) for d, a in doses if t > d + 1)
            levels.append((float(t), round(float(c), 3)))
        events[patient] = (doses, levels)
    return events


class Proc:
    def __init__(self, args, env, ready):
        self.args, self.env, self.ready = args, env, ready
        self.start()

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "mipdstream.cli", *self.args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        line = self.proc.stderr.readline().decode()
        assert line.startswith(self.ready), line + self.proc.stderr.read().decode()[-2000:]

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(60) == 0


def reference(patient: str, covariates: dict, doses, levels):
    events = [Reading(t, c, 0) for t, c in levels] + [Dose(t, a, None, 1.0) for t, a in doses]
    prior = init(load_model(MODEL), covariates, patient_seed(SEED, patient), PARTICLES, "pf")
    return update(prior, sorted(events, key=lambda e: (e.time, isinstance(e, Dose))))
