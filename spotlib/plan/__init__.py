"""Before a run: profile validation, the memory and time plan, the preflight and the rehearsal's files."""
