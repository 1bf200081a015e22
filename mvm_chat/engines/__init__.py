"""Model engines: in-process llama.cpp, any OpenAI-compatible server, SGLang."""
