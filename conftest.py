"""Root conftest: shared fixtures, and a guard that no test ever calls a hosted LLM."""

import os

pytest_plugins = ["p2e_kit.testing"]

# No hosted model in tests: the offline model answers. litellm reads its price map locally.
for _key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"):
    os.environ.pop(_key, None)
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["P2E_LLM_OFFLINE_ONLY"] = "1"
