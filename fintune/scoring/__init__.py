"""The eval's judgement of a reply, shared by the eval stage and GRPO's rewards:
where a reply ends (stop.py), the answer it states (extract.py), and whether the
answer and the worked steps are right (judge.py)."""
