"""`hf-transfer push`: upload a saved model folder to the Hugging Face Hub with a model card."""

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="Upload a saved model folder to a Hub model repo.",
        description=(
            "Uploads a folder written by save_pretrained or save_target_weights to a Hub model repo: validates "
            "the repo id, leaves out training checkpoints and caches, and adds a model card. The folder's own "
            "README.md is kept unless --source-data or --target-data is given. Then it creates the repo if "
            "needed and uploads with HfApi.upload_folder."
        ),
    )
    parser.add_argument("folder", help="Folder of the saved model (full pipeline, flow model or target-only save).")
    parser.add_argument("repo_id", help="Target repo id, 'namespace/name' or 'name'.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to; created from main if missing.")
    parser.add_argument("--commit-message", default=None, help="Message of the upload commit.")
    parser.add_argument("--source-data", default=None, help="Description of the source data, for the model card.")
    parser.add_argument("--target-data", default=None, help="Description of the target data, for the model card.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub
    from ..model_card import ModelCardInfo

    card_info = None
    if args.source_data or args.target_data:
        card_info = ModelCardInfo(source_data=args.source_data, target_data=args.target_data)
    commit = push_to_hub(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        card_info=card_info,
    )
    print(getattr(commit, "commit_url", commit))
    return 0
