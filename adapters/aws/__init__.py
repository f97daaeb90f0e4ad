"""AWS adapter (Lambda + SQS, DynamoDB/S3/Secrets Manager): the AWS SDK (botocore) is imported only inside this package."""
