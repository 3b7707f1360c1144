"""Model exports: a fine-tuned model or checkpoint as an adapter, a merged model or GGUF."""
