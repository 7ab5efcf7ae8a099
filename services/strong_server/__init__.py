"""The embedded strong model server: llama.cpp (through the `xllamacpp` wheel) serving a GGUF file with an
OpenAI-compatible API. In production the strong model is any OpenAI-compatible endpoint instead."""
