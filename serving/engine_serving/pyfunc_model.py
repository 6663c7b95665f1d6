"""The MLflow "model from code" of :mod:`engine_serving.pyfunc`: :func:`engine_serving.pyfunc.save_pyfunc` hands
this file to ``mlflow.pyfunc.save_model``, which copies it into the model and runs it at load time (no pickle)."""

from mlflow.models import set_model

from engine_serving.pyfunc import EngineModel

set_model(EngineModel())
