//! The error codes mongosim answers with: each one's number and the `codeName` a reply carries,
//! from one table. Names are those of the server's `src/mongo/base/error_codes.yml` as of
//! MongoDB 7.0 (reference §8.8); assertion ids that have no entry there report
//! `Location<code>` as their codeName, as the server does, and get a descriptive constant name
//! here.

/// A server error code: its number and its `codeName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(i32);

impl ErrorCode {
    /// The numeric code (Int32 `code` on the wire).
    pub const fn code(self) -> i32 {
        self.0
    }

    /// The `codeName` a reply carries.
    pub fn name(self) -> String {
        code_name(self.0)
    }
}

/// The `codeName` of any numeric code (e.g. a `failCommand` `errorCode`): the table's name,
/// or `Location<code>` for codes the table does not know.
pub fn code_name(code: i32) -> String {
    match table_name(code) {
        Some(name) => name.to_string(),
        None => format!("Location{code}"),
    }
}

macro_rules! error_codes {
    ($($name:ident = $code:literal, $code_name:literal;)*) => {
        #[allow(non_upper_case_globals)]
        impl ErrorCode {
            $(
                #[doc = concat!("`", $code, "` (codeName `", $code_name, "`).")]
                pub const $name: ErrorCode = ErrorCode($code);
            )*
        }

        fn table_name(code: i32) -> Option<&'static str> {
            match code {
                $($code => Some($code_name),)*
                _ => None,
            }
        }
    };
}

error_codes! {
    InternalError = 1, "InternalError";
    BadValue = 2, "BadValue";
    NoSuchKey = 4, "NoSuchKey";
    GraphContainsCycle = 5, "GraphContainsCycle";
    HostUnreachable = 6, "HostUnreachable";
    HostNotFound = 7, "HostNotFound";
    UnknownError = 8, "UnknownError";
    FailedToParse = 9, "FailedToParse";
    CannotMutateObject = 10, "CannotMutateObject";
    UserNotFound = 11, "UserNotFound";
    UnsupportedFormat = 12, "UnsupportedFormat";
    Unauthorized = 13, "Unauthorized";
    TypeMismatch = 14, "TypeMismatch";
    Overflow = 15, "Overflow";
    InvalidLength = 16, "InvalidLength";
    ProtocolError = 17, "ProtocolError";
    AuthenticationFailed = 18, "AuthenticationFailed";
    IllegalOperation = 20, "IllegalOperation";
    InvalidBSON = 22, "InvalidBSON";
    AlreadyInitialized = 23, "AlreadyInitialized";
    LockTimeout = 24, "LockTimeout";
    NamespaceNotFound = 26, "NamespaceNotFound";
    IndexNotFound = 27, "IndexNotFound";
    PathNotViable = 28, "PathNotViable";
    CannotBackfillArray = 34, "CannotBackfillArray";
    ConflictingUpdateOperators = 40, "ConflictingUpdateOperators";
    CursorNotFound = 43, "CursorNotFound";
    LockBusy = 46, "LockBusy";
    NoMatchingDocument = 47, "NoMatchingDocument";
    NamespaceExists = 48, "NamespaceExists";
    MaxTimeMSExpired = 50, "MaxTimeMSExpired";
    ManualInterventionRequired = 51, "ManualInterventionRequired";
    DollarPrefixedFieldName = 52, "DollarPrefixedFieldName";
    InvalidIdField = 53, "InvalidIdField";
    NotSingleValueField = 54, "NotSingleValueField";
    InvalidDBRef = 55, "InvalidDBRef";
    EmptyFieldName = 56, "EmptyFieldName";
    DottedFieldName = 57, "DottedFieldName";
    CommandNotFound = 59, "CommandNotFound";
    ShardKeyNotFound = 61, "ShardKeyNotFound";
    StaleShardVersion = 63, "StaleShardVersion";
    WriteConcernFailed = 64, "WriteConcernFailed";
    ImmutableField = 66, "ImmutableField";
    CannotCreateIndex = 67, "CannotCreateIndex";
    IndexAlreadyExists = 68, "IndexAlreadyExists";
    ShardNotFound = 70, "ShardNotFound";
    InvalidOptions = 72, "InvalidOptions";
    InvalidNamespace = 73, "InvalidNamespace";
    NoReplicationEnabled = 76, "NoReplicationEnabled";
    UnknownReplWriteConcern = 79, "UnknownReplWriteConcern";
    IndexOptionsConflict = 85, "IndexOptionsConflict";
    IndexKeySpecsConflict = 86, "IndexKeySpecsConflict";
    NetworkTimeout = 89, "NetworkTimeout";
    ShutdownInProgress = 91, "ShutdownInProgress";
    NotYetInitialized = 94, "NotYetInitialized";
    OperationFailed = 96, "OperationFailed";
    UnsatisfiableWriteConcern = 100, "UnsatisfiableWriteConcern";
    WriteConflict = 112, "WriteConflict";
    CommandNotSupported = 115, "CommandNotSupported";
    ConflictingOperationInProgress = 117, "ConflictingOperationInProgress";
    NamespaceNotSharded = 118, "NamespaceNotSharded";
    DocumentValidationFailure = 121, "DocumentValidationFailure";
    CommandFailed = 125, "CommandFailed";
    FailedToSatisfyReadPreference = 133, "FailedToSatisfyReadPreference";
    ReadConcernMajorityNotAvailableYet = 134, "ReadConcernMajorityNotAvailableYet";
    CappedPositionLost = 136, "CappedPositionLost";
    CursorInUse = 143, "CursorInUse";
    StaleEpoch = 150, "StaleEpoch";
    ViewDepthLimitExceeded = 165, "ViewDepthLimitExceeded";
    CommandNotSupportedOnView = 166, "CommandNotSupportedOnView";
    OptionNotSupportedOnView = 167, "OptionNotSupportedOnView";
    InvalidPipelineOperator = 168, "InvalidPipelineOperator";
    QueryPlanKilled = 175, "QueryPlanKilled";
    ClientMetadataCannotBeMutated = 186, "ClientMetadataCannotBeMutated";
    PrimarySteppedDown = 189, "PrimarySteppedDown";
    ElectionInProgress = 216, "ElectionInProgress";
    IllegalOpMsgFlag = 223, "IllegalOpMsgFlag";
    TransactionTooOld = 225, "TransactionTooOld";
    TooManyDocumentSequences = 233, "TooManyDocumentSequences";
    RetryChangeStream = 234, "RetryChangeStream";
    CursorKilled = 237, "CursorKilled";
    SnapshotTooOld = 239, "SnapshotTooOld";
    ConversionFailure = 241, "ConversionFailure";
    TransactionAborted = 244, "TransactionAborted";
    BrokenPromise = 245, "BrokenPromise";
    SnapshotUnavailable = 246, "SnapshotUnavailable";
    StaleDbVersion = 249, "StaleDbVersion";
    StaleChunkHistory = 250, "StaleChunkHistory";
    NoSuchTransaction = 251, "NoSuchTransaction";
    TransactionCommitted = 256, "TransactionCommitted";
    TransactionTooLarge = 257, "TransactionTooLarge";
    InvalidResumeToken = 260, "InvalidResumeToken";
    TooManyLogicalSessions = 261, "TooManyLogicalSessions";
    ExceededTimeLimit = 262, "ExceededTimeLimit";
    OperationNotSupportedInTransaction = 263, "OperationNotSupportedInTransaction";
    FailPointSetFailed = 266, "FailPointSetFailed";
    PreparedTransactionInProgress = 267, "PreparedTransactionInProgress";
    MigrationConflict = 272, "MigrationConflict";
    ChangeStreamFatalError = 280, "ChangeStreamFatalError";
    ChangeStreamHistoryLost = 286, "ChangeStreamHistoryLost";
    ChecksumMismatch = 288, "ChecksumMismatch";
    QueryExceededMemoryLimitNoDiskUseAllowed = 292, "QueryExceededMemoryLimitNoDiskUseAllowed";
    APIVersionError = 322, "APIVersionError";
    UnsupportedOpQueryCommand = 352, "UnsupportedOpQueryCommand";
    ConnectionError = 384, "ConnectionError";
    SocketException = 9001, "SocketException";
    CannotGrowDocumentInCappedNamespace = 10003, "CannotGrowDocumentInCappedNamespace";
    ClusterTimeUnavailable = 10071, "Location10071";
    NotWritablePrimary = 10107, "NotWritablePrimary";
    BSONObjectTooLarge = 10334, "BSONObjectTooLarge";
    DuplicateKey = 11000, "DuplicateKey";
    InterruptedAtShutdown = 11600, "InterruptedAtShutdown";
    Interrupted = 11601, "Interrupted";
    InterruptedDueToReplStateChange = 11602, "InterruptedDueToReplStateChange";
    BackgroundOperationInProgressForDatabase = 12586, "BackgroundOperationInProgressForDatabase";
    MergeStageNoMatchingDocument = 13113, "MergeStageNoMatchingDocument";
    DatabaseDifferCase = 13297, "DatabaseDifferCase";
    StaleConfig = 13388, "StaleConfig";
    NotPrimaryNoSecondaryOk = 13435, "NotPrimaryNoSecondaryOk";
    NotPrimaryOrSecondary = 13436, "NotPrimaryOrSecondary";
    OutOfDiskSpace = 14031, "OutOfDiskSpace";
    GroupOrFacetSpecNotObject = 15947, "Location15947";
    UnknownGroupOperator = 15952, "Location15952";
    GroupMissingId = 15955, "Location15955";
    SkipNegative = 15956, "Location15956";
    LimitNotNumber = 15957, "Location15957";
    LimitNotPositive = 15958, "Location15958";
    MatchSpecNotObject = 15959, "Location15959";
    ProjectSpecNotObject = 15969, "Location15969";
    SkipNotNumber = 15972, "Location15972";
    SortSpecNotObject = 15973, "Location15973";
    SortKeyNotNumeric = 15974, "Location15974";
    SortOrderNotOneOrMinusOne = 15975, "Location15975";
    SortSpecEmpty = 15976, "Location15976";
    UnwindSpecWrongType = 15981, "Location15981";
    ExpressionObjectNotSingleField = 15983, "Location15983";
    FieldPathEmptyComponent = 15998, "Location15998";
    ExpressionWrongArgCount = 16020, "Location16020";
    FieldPathDollarPrefix = 16410, "Location16410";
    AddNonNumeric = 16554, "Location16554";
    MultiplyNonNumeric = 16555, "Location16555";
    SubtractBadTypes = 16556, "Location16556";
    DivideNonNumeric = 16609, "Location16609";
    ModByZero = 16610, "Location16610";
    ModNonNumeric = 16611, "Location16611";
    AddMultipleDates = 16612, "Location16612";
    ConcatNonString = 16702, "Location16702";
    MapInvalidAsVariable = 16866, "Location16866";
    EmptyVariableName = 16869, "Location16869";
    InvalidUserVariableName = 16870, "Location16870";
    LetArgNotObject = 16874, "Location16874";
    LetUnknownParameter = 16875, "Location16875";
    LetMissingVars = 16876, "Location16876";
    LetMissingIn = 16877, "Location16877";
    MapArgNotObject = 16878, "Location16878";
    MapUnknownParameter = 16879, "Location16879";
    MapMissingInput = 16880, "Location16880";
    MapMissingIn = 16882, "Location16882";
    MapInputNotArray = 16883, "Location16883";
    OutSpecWrongType = 16990, "Location16990";
    SetUnionNonArray = 17043, "Location17043";
    RedactBadResult = 17053, "Location17053";
    CondMissingIf = 17080, "Location17080";
    CondMissingThen = 17081, "Location17081";
    CondMissingElse = 17082, "Location17082";
    CondUnknownParameter = 17083, "Location17083";
    SizeArgNotArray = 17124, "Location17124";
    OutToCappedCollection = 17152, "Location17152";
    UndefinedVariable = 17276, "Location17276";
    OutToSpecialCollection = 17385, "Location17385";
    UpdatedDocumentTooLarge = 17419, "Location17419";
    FilterArgNotObject = 28646, "Location28646";
    FilterUnknownParameter = 28647, "Location28647";
    FilterMissingInput = 28648, "Location28648";
    FilterInvalidAsVariable = 28649, "Location28649";
    FilterMissingCond = 28650, "Location28650";
    FilterInputNotArray = 28651, "Location28651";
    ConcatArraysNonArray = 28664, "Location28664";
    SliceWrongArgCount = 28667, "Location28667";
    ArrayElemAtNotArray = 28689, "Location28689";
    SliceInvalidArgument = 28724, "Location28724";
    SliceThirdArgNotPositive = 28729, "Location28729";
    SampleMissingSize = 28745, "Location28745";
    AbsNonNumeric = 28765, "Location28765";
    UnwindPathNotString = 28808, "Location28808";
    UnwindPreserveNotBool = 28809, "Location28809";
    UnwindIncludeArrayIndexInvalid = 28810, "Location28810";
    UnwindUnknownOption = 28811, "Location28811";
    UnwindMissingPath = 28812, "Location28812";
    UnwindPathNoDollar = 28818, "Location28818";
    UnsetSpecWrongType = 31002, "Location31002";
    UnsetSpecEmpty = 31119, "Location31119";
    UnsetSpecNonString = 31120, "Location31120";
    ProjectionPathCollisionRemaining = 31249, "Location31249";
    ProjectionPathCollision = 31250, "Location31250";
    InclusionInExclusionProjection = 31253, "Location31253";
    ExclusionInInclusionProjection = 31254, "Location31254";
    MergeToSpecialCollection = 31319, "Location31319";
    MergeToInternalDatabase = 31320, "Location31320";
    OutToInternalDatabase = 31321, "Location31321";
    TopologyVersionMaxAwaitMismatch = 31368, "Location31368";
    TopologyVersionNegativeCounter = 31372, "Location31372";
    MaxAwaitTimeMsNegative = 31373, "Location31373";
    ReverseArrayNotArray = 34435, "Location34435";
    StrLenBytesNotString = 34473, "Location34473";
    SwitchNoMatchingBranch = 40066, "Location40066";
    InSecondArgNotArray = 40081, "Location40081";
    SortByCountBadSpec = 40148, "Location40148";
    CountFieldNotString = 40156, "Location40156";
    CountFieldEmpty = 40157, "Location40157";
    CountFieldDollarPrefix = 40158, "Location40158";
    CountFieldContainsDot = 40160, "Location40160";
    FacetSpecEmpty = 40169, "Location40169";
    FacetArgNotArray = 40170, "Location40170";
    FacetStageNotObject = 40171, "Location40171";
    AddFieldsSpecEmpty = 40177, "Location40177";
    BucketTooFewBoundaries = 40192, "Location40192";
    BucketBoundaryTypesDiffer = 40193, "Location40193";
    BucketBoundariesNotSorted = 40194, "Location40194";
    BucketOutputNotObject = 40196, "Location40196";
    BucketUnknownOption = 40197, "Location40197";
    BucketMissingGroupByOrBoundaries = 40198, "Location40198";
    BucketDefaultInsideRange = 40199, "Location40199";
    BucketBoundariesNotArray = 40200, "Location40200";
    BucketSpecNotObject = 40201, "Location40201";
    BucketGroupByInvalid = 40202, "Location40202";
    ReplacementNotObject = 40228, "Location40228";
    ReplaceRootSpecNotObject = 40229, "Location40229";
    ReplaceRootMissingNewRoot = 40231, "Location40231";
    GroupFieldNotAccumulator = 40234, "Location40234";
    GroupFieldNameContainsDot = 40235, "Location40235";
    GroupFieldMultipleAccumulators = 40238, "Location40238";
    BucketAutoGroupByInvalid = 40239, "Location40239";
    BucketAutoSpecNotObject = 40240, "Location40240";
    BucketAutoBucketsNotPositive = 40243, "Location40243";
    BucketAutoUnknownOption = 40245, "Location40245";
    BucketAutoMissingGroupByOrBuckets = 40246, "Location40246";
    BucketAutoGranularityUnsupported = 40257, "Location40257";
    AddFieldsSpecNotObject = 40272, "Location40272";
    StageSpecNotSingleField = 40323, "Location40323";
    UnrecognizedPipelineStage = 40324, "Location40324";
    FieldPathEmpty = 40352, "Location40352";
    ObjectToArrayNotObject = 40390, "Location40390";
    MergeObjectsNonObject = 40400, "Location40400";
    IdlFailedToParse = 40414, "Location40414";
    IdlUnknownField = 40415, "Location40415";
    IdlNotUuid = 40423, "Location40423";
    OpMsgMultipleBodies = 40430, "Location40430";
    OpMsgDuplicateDocumentSequence = 40431, "Location40431";
    OpMsgUnknownSectionKind = 40432, "Location40432";
    OpMsgDuplicateSequenceField = 40433, "Location40433";
    OpMsgMissingDb = 40571, "Location40571";
    ChangeStreamNotReplicaSet = 40573, "Location40573";
    OpMsgMissingBody = 40587, "Location40587";
    StageNotAllowedInFacet = 40600, "Location40600";
    StageMustBeLast = 40601, "Location40601";
    ChangeStreamNotFirstStage = 40602, "Location40602";
    ResumeTokenOversized = 40646, "Location40646";
    ResumeTokenDataWrongType = 40647, "Location40647";
    ResumeTokenTypeBitsInvalid = 40648, "Location40648";
    ResumeTokenEmptyOrBadClusterTime = 40649, "Location40649";
    ChangeStreamMultipleResumeOptions = 40674, "Location40674";
    ClientMarkedKilled = 46841, "ClientMarkedKilled";
    NotARetryableWriteCommand = 50768, "NotARetryableWriteCommand";
    ResumeTokenMissingTxnOpIndex = 50793, "Location50793";
    ResumeTokenNegativeTxnOpIndex = 50794, "Location50794";
    ResumeTokenUnsupportedVersion = 50795, "Location50795";
    ResumeTokenMissingVersion = 50796, "Location50796";
    ChangeStreamSpecNotObject = 50808, "Location50808";
    KeyStringUnsupportedDecimal = 50810, "Location50810";
    KeyStringUnknownType = 50811, "Location50811";
    KeyStringMissingNullTerminator = 50816, "Location50816";
    KeyStringBufferExhausted = 50818, "Location50818";
    ResumeTokenVersionWrongType = 50854, "Location50854";
    ResumeTokenTxnOpIndexWrongType = 50855, "Location50855";
    ChangeStreamResumeAfterAndStartAfter = 50865, "Location50865";
    ResumeTokenFromInvalidateWrongType = 50870, "Location50870";
    ResumeTokenMissingFromInvalidate = 50872, "Location50872";
    FailCommandCloseConnection = 50985, "Location50985";
    IdlValueBelowMinimum = 51024, "Location51024";
    ResumeTokenMissingTokenType = 51055, "Location51055";
    ResumeTokenTokenTypeWrongType = 51056, "Location51056";
    ResumeTokenUnknownTokenType = 51057, "Location51057";
    RegexInvalid = 51091, "Location51091";
    RegexInvalidFlag = 51108, "Location51108";
    MergeOnFieldMissing = 51132, "Location51132";
    MergeOnElementNotString = 51134, "Location51134";
    MergeIntoWrongType = 51178, "Location51178";
    MergeSpecWrongType = 51182, "Location51182";
    MergeOnNoUniqueIndex = 51183, "Location51183";
    MergeOnWrongType = 51186, "Location51186";
    MergeOnEmpty = 51187, "Location51187";
    MergeModeCombinationUnsupported = 51189, "Location51189";
    MergeWhenMatchedWrongType = 51191, "Location51191";
    MergeLetWithoutPipeline = 51199, "Location51199";
    PositionalProjectionNoMatch = 51246, "Location51246";
    EmptySubProjection = 51270, "Location51270";
    ProjectSpecEmpty = 51272, "Location51272";
    MergeLetRedefinesNew = 51273, "Location51273";
    IfNullTooFewArgs = 1257300, "Location1257300";
    RandTakesNoArgs = 3040500, "Location3040500";
    GetFieldMissingField = 3041702, "Location3041702";
    GetFieldFieldNotString = 3041704, "Location3041704";
    GetFieldInputNotObject = 3041705, "Location3041705";
    SetFieldArgNotObject = 4161100, "Location4161100";
    SetFieldInputNotObject = 4161101, "Location4161101";
    SetFieldMissingValue = 4161105, "Location4161105";
    DocumentDiffUnexpectedField = 4770503, "Location4770503";
    GetFieldFieldNotConstant = 5654602, "Location5654602";
    LegacyOpcodeRemoved = 5739101, "Location5739101";
    DocumentsNotArray = 5858203, "Location5858203";
    ResumeTokenBadUuid = 6189500, "Location6189500";
    ResumeTokenMissingEventIdentifier = 6189501, "Location6189501";
    ResumeTokenEventIdentifierNotObject = 6189503, "Location6189503";
    ResumeTokenBadHighWaterMark = 6189504, "Location6189504";
    UnsupportedOplogVersion = 6741200, "Location6741200";
    SplitEventFragmentTooLarge = 7182500, "Location7182500";
    ResumeTokenBadFragmentNum = 7182501, "Location7182501";
    SplitEventNothingToSplit = 7182502, "Location7182502";
    SplitLargeEventSpecNotEmpty = 7182800, "Location7182800";
    SplitLargeEventNotLast = 7182802, "Location7182802";
}
