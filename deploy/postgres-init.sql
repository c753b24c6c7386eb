-- One database per service: each service owns its data.
CREATE DATABASE p2e_orchestrator;
CREATE DATABASE p2e_tool_runner;
CREATE DATABASE p2e_ledger;
CREATE DATABASE p2e_evaluator;
CREATE DATABASE p2e_artifacts;
