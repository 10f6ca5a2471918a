"""Encoder-decoder models, speech first (Whisper; T5-style text exports and generates too): export,
transcribe, validate, bench.

    from toolkit.speech.export import export_speech_onnx
    from toolkit.speech.transcribe import transcribe
    transcribe("exported/whisper-onnx", "clip.wav").text

A speech artifact folder holds optimum's `automatic-speech-recognition-with-past` graphs:
`encoder_model.onnx` (input_features → last_hidden_state), `decoder_model.onnx` (the first step:
input_ids + encoder_hidden_states → logits and the self- and cross-attention cache) and
`decoder_with_past_model.onnx` (one token a step through that cache), beside the Hugging Face
config, generation config, feature extractor, tokenizer and `manifest.json`.
"""
