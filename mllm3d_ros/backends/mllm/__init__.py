"""The transformers (MLLM) backend: grounding VLM + SAM-family masks. Heavy imports happen on use."""
