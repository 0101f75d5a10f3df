"""PsySafe: dark-personality attacks on multi-agent LLM systems, their evaluation and defences.

Where things are (prompts are YAML beside the code that renders them):
  backends/        ChatBackend.complete_batch + adapters: ScriptedBackend, JaxBackend, OpenAIBackend;
                   retry.py: which request faults are retried, backoff, Retry-After, attempt/time bounds
  server.py        OpenAI-compatible /v1/chat/completions over any backend (tools/psysafe_server.py)
  attack.py        dark-trait block, red-teaming block, attack modes  (attack_prompts.yaml)
  systems.py       Camel / AutoGen / MetaGPT / AutoGPT layouts        (systems.yaml)
  dialogue.py      one conversation: transcript, system prompts, who sees what
  engine.py        many dialogues in lockstep: one backend batch per step
  failures.py      a request that fails for good fails its dialogue only (stored as failed, rerun next time)
  questionnaire.py Dark-Triad questionnaire side query + strict scoring (dark_triad.yaml);
                   questionnaire_answers.py: answers read from any layout, the validity rule
  judge.py         dangerous/safe judge with a strict verdict parser  (judge.yaml)
  defences.py      input filter, doctor, police                       (defences.yaml)
  tasks.py         PsySafe / AdvBench task files (label -> kind), our own set (tasks.yaml);
                   task_files.py: CSV (BOM or not) and .xlsx rows
  metrics.py       PDR, JDR-Rk, point-biserial correlation
  store.py         crash-safe JSON Lines results (failed attempts kept as history); run.py / report.py
                   the command-line entry points; run_identity.py: the settings fingerprint of a dialogue
"""
