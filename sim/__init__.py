"""diffusim: an agent-based model of global AI adoption (closed APIs vs open weights).

The one door: ``run(scenario, seed, n_firms) -> Result``.
"""

from sim.model import DiffusionModel, run
from sim.result import Result
from sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario, parse_yaml

__all__ = ["DiffusionModel", "Result", "Scenario", "ScenarioError", "load_scenario",
           "parse_scenario", "parse_yaml", "run"]
