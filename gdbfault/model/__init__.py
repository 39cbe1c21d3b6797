"""What a run is and what it found: the run spec (one table of run options), the RunResult and its JSON, the probe roles, fault-path shapes and the guest's ground truth."""
