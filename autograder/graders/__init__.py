"""Hidden graders: one pytest file per part. Never released; run only in the trusted grader process."""
