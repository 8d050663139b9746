"""pi0-eval's rclpy side: one episode protocol on top of the :class:`~pi0_ros.testing.operator.Operator`.

Every episode starts the same way a demonstration did: the policy node is parked in teleop mode with both
arms and grippers sent to their home positions, the simulator resets to the seed, the arms come to rest at
home, and only then is the instruction published and the node switched to ``control_mode: policy`` (the
operator's parameter switch, as on the robot). Without the parking, the policy keeps acting through the
reset with the previous instruction and every episode starts from a different pose. After the episode the
node goes back to teleop (the arms return home). Imported lazily by ``evaluate``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from pi0_ros.embodiment import Embodiment
from pi0_ros.testing.operator import Operator

HOME_TOLERANCE_RAD = 0.02


class EpisodeDriver:
    """Resets, starts and watches episodes through a running :class:`Operator`; all waits are bounded."""

    def __init__(self, operator: Operator, embodiment: Embodiment, settle_s: float = 1.0,
                 policy_status: str = "policy_node"):
        self.op = operator
        self.embodiment = embodiment
        self.settle_s = settle_s
        self.policy_status = policy_status
        self.parked_groups = [g.name for g in embodiment.groups.values() if g.kind in ("arm", "gripper")]
        self.arms = [g.name for g in embodiment.groups.values() if g.kind == "arm"]
        self.t_start = time.monotonic()

    def _send_home(self) -> None:
        self.op.send_joint_targets({g: self.embodiment.groups[g].home for g in self.parked_groups})

    def _at_home(self) -> bool:
        for arm in self.arms:
            q = self.op.positions(arm)
            if q is None or np.max(np.abs(q - self.embodiment.groups[arm].home)) > HOME_TOLERANCE_RAD:
                return False
        return True

    def reset(self, seed: int, timeout: float = 20.0) -> bool:
        """Park the policy (teleop, home targets), reset the simulator to ``seed``, wait for rest at home."""
        self._send_home()
        results = self.op.set_parameters(control_mode="teleop")
        if not all(ok for ok, _ in results):
            raise RuntimeError(f"the policy node refused teleop mode: {results}")
        deadline = time.monotonic() + timeout
        t_request = time.monotonic()
        while time.monotonic() < deadline:
            self._send_home()
            self.op.reset_simulator(seed)
            if self._wait(lambda s: int(s.get("seed", -1)) == seed, 2.0, since=t_request) is not None:
                break
        else:
            return False
        return self.park(max(0.0, deadline - time.monotonic()))

    def park(self, timeout: float = 10.0) -> bool:
        """Teleop home targets for at least ``settle_s`` and until the arms are at home (bounded)."""
        deadline = time.monotonic() + timeout
        settle_end = time.monotonic() + self.settle_s
        while time.monotonic() < deadline and (time.monotonic() < settle_end or not self._at_home()):
            self._send_home()
            time.sleep(0.1)
        return self._at_home()

    def current_state(self) -> Optional[Dict[str, Any]]:
        """The newest task state (JSON of ``/sim_robot/task_state``)."""
        latest = self.op.latest(self.op.task_state)
        return None if latest is None else latest.value

    def start(self, instruction: Optional[str]) -> Tuple[bool, str]:
        """Publish ``instruction`` (latched) and switch the policy node to policy mode."""
        if instruction is not None:
            self.op.send_instruction(instruction)
            time.sleep(0.3)  # the latched instruction reaches the node before its first policy observation
        self.t_start = time.monotonic()
        (result,) = self.op.set_parameters(control_mode="policy")
        return result

    def stop(self) -> None:
        """Back to teleop: the arms return to the last teleop targets (home)."""
        self.op.set_parameters(control_mode="teleop")

    def wait_for(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float) -> Optional[Dict[str, Any]]:
        """The first task state since the start satisfying ``predicate`` within ``timeout`` s, else None."""
        return self._wait(predicate, timeout, since=self.t_start)

    def _wait(self, predicate, timeout: float, since: float) -> Optional[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for entry in self.op.since(self.op.task_state, checked):
                checked = max(checked, entry.t + 1e-9)
                if predicate(entry.value):
                    return entry.value
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def states_since_start(self) -> List[Tuple[float, Dict[str, Any]]]:
        """``(seconds since the start, task state)`` of every task state received since the start."""
        return [(e.t - self.t_start, e.value) for e in self.op.since(self.op.task_state, self.t_start)]

    def commands_since_start(self) -> Dict[str, List[Tuple[float, np.ndarray]]]:
        """The arm commands the policy node sent since the start: ``{arm: [(t, positions), ...]}``."""
        out: Dict[str, List[Tuple[float, np.ndarray]]] = {}
        for arm in self.arms:
            names = self.embodiment.groups[arm].joints
            out[arm] = [(e.t, np.array([e.value[n] for n in names]))
                        for e in self.op.since(self.op.commands[arm], self.t_start)
                        if all(n in e.value for n in names)]
        return out

    def faults_since_start(self) -> List[str]:
        """Distinct fault names the policy node reported while the policy acted, in order."""
        faults: List[str] = []
        for entry in self.op.since(self.op.diagnostics, self.t_start):
            values = entry.value.get(self.policy_status, {})
            faults.extend(f for f in values.get("faults", "").split(",") if f and f not in faults)
        return faults
