"""Stage 1, load: manifests (files, directories, stdin, API objects) into the model.

``manifests.py`` is the entry (``load_paths``); ``documents.py`` reads YAML/JSON safely,
``decode.py`` turns each object into model types strictly (file, object and field in every
error), ``podfast.py`` is its fast path for plain Pods, ``validation.py`` holds the API
server's own rules, ``hints.py`` the did-you-mean for unknown fields and kinds,
``workloads.py`` expands Deployments and friends into their pods and ``services.py`` reads
Services. Nothing here touches the kernel. Next stage: enforcer.compiler.
"""
