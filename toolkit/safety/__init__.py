"""Checks that run before an untrusted file reaches a native or code-running parser.

They turn known attack shapes into clean errors (BadInput, exit 2), without executing
or unpickling anything to find out. One module per kind of input; import from it:

- files:       the file exists and is not empty; bounded reads of JSON configs
- onnx:        external data that leaves the model's folder (CVE-2022-25882,
               CVE-2024-27318: `..`, absolute paths, symlinks, hard links)
- tflite:      not what the suffix says, truncated flatbuffers, graphs that crash the interpreter
- pickle:      pickle checkpoints (refused unless trusted), TorchScript archives (programs),
               .pt2 archives that need pickle
- safetensors: the file opened with the library's own reader, errors as one line
- hf:          Hugging Face folders whose config runs the folder's own .py files
- yaml:        safe_load only, with size and alias-expansion limits
- isolation:   model work in a supervised child process (crash, time and memory limits)
"""
